package encode

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"slices"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/parquet-go/parquet-go"

	"github.com/outflow/outflow/internal/impression"
)

// parquetColumns are the columns of a Parquet data object, in order: those of the
// vendor's S3 export, so users' existing Athena tables read it unchanged, then the
// other impression fields (CONTRACT §4). Each holds a field of impression.Fields, or
// one the impression has no field for. Strings are UTF-8 byte arrays, integers INT64
// (times in Unix ms).
var parquetColumns = []parquetColumn{
	{"key", fieldIndex("key")},
	{"label", fieldIndex("label")},
	{"treatment", fieldIndex("treatment")},
	{"splitName", fieldIndex("split")},
	{"splitVersion", fieldIndex("splitVersionNumber")},
	{"environmentId", fieldIndex("environmentId")},
	{"trafficTypeId", trafficTypeID},
	{"sdk", fieldIndex("sdk")},
	{"sdkVersion", fieldIndex("sdkVersion")},
	{"timestamp", fieldIndex("time")},
	{"receptionTimestamp", receivedAt},
	{"environmentName", fieldIndex("environmentName")},
	{"bucketingKey", fieldIndex("bucketingKey")},
	{"machineName", fieldIndex("machineName")},
	{"machineIp", fieldIndex("machineIp")},
	{"properties", fieldIndex("properties")},
}

type parquetColumn struct {
	name  string
	field int // index in impression.Fields, or trafficTypeID or receivedAt
}

// The columns that are not impression fields.
const (
	trafficTypeID = -1 // not in the impression: always empty
	receivedAt    = -2 // when outflow read the impression: imp.ReceivedAt
)

// fieldIndex is the index of name in impression.Fields.
func fieldIndex(name string) int {
	i := slices.Index(impression.Fields, name)
	if i < 0 {
		panic("encode: no impression field " + name)
	}
	return i
}

// isInt says whether column c holds an INT64, not a string.
func (c parquetColumn) isInt() bool {
	switch c.field {
	case trafficTypeID:
		return false
	case receivedAt:
		return true
	}
	_, _, isInt := new(impression.Impression).Value(c.field)
	return isInt
}

// appendParquetRow appends imp's values to row, one per column.
func appendParquetRow(row parquet.Row, imp *impression.Impression) parquet.Row {
	for i, c := range parquetColumns {
		var v parquet.Value
		switch c.field {
		case trafficTypeID:
			v = parquet.ByteArrayValue(nil)
		case receivedAt:
			v = parquet.Int64Value(imp.ReceivedAt)
		default:
			if s, n, isInt := imp.Value(c.field); isInt {
				v = parquet.Int64Value(n)
			} else {
				v = parquet.ByteArrayValue([]byte(s))
			}
		}
		row = append(row, v.Level(0, 0, i))
	}
	return row
}

// parquetSchema is the schema of parquetColumns. It is named "ParquetRow", as
// parquet-go named it when it was derived from that struct: the name is in every
// object's footer, and objects stay byte for byte what they were
// (TestParquetBytesUnchanged).
var parquetSchema = func() *parquet.Schema {
	g := columnGroup{fields: make([]parquet.Field, len(parquetColumns))}
	for i, c := range parquetColumns {
		node := parquet.String()
		if c.isInt() {
			node = parquet.Int(64) // as parquet-go maps an int64: INT64, logical INT(64, signed)
		}
		g.fields[i] = columnField{Node: node, name: c.name}
	}
	return parquet.NewSchema("ParquetRow", g)
}()

// columnGroup is a group of columns in the order given: a parquet.Group sorts them
// by name.
type columnGroup struct {
	parquet.Group
	fields []parquet.Field
}

func (g columnGroup) Fields() []parquet.Field { return g.fields }

type columnField struct {
	parquet.Node
	name string
}

func (f columnField) Name() string { return f.name }

// Value is for writing Go values; rows are written as parquet.Row only.
func (f columnField) Value(reflect.Value) reflect.Value {
	panic("encode: parquet column " + f.name + " has no Go value")
}

// ParquetRow is a row of a Parquet data object as ReadParquet gives it back; its
// columns are parquetColumns (TestParquetRowColumns).
type ParquetRow struct {
	Key                string `parquet:"key"`
	Label              string `parquet:"label"`
	Treatment          string `parquet:"treatment"`
	SplitName          string `parquet:"splitName"`
	SplitVersion       int64  `parquet:"splitVersion"`
	EnvironmentID      string `parquet:"environmentId"`
	TrafficTypeID      string `parquet:"trafficTypeId"`
	SDK                string `parquet:"sdk"`
	SDKVersion         string `parquet:"sdkVersion"`
	Timestamp          int64  `parquet:"timestamp"`
	ReceptionTimestamp int64  `parquet:"receptionTimestamp"`
	EnvironmentName    string `parquet:"environmentName"`
	BucketingKey       string `parquet:"bucketingKey"`
	MachineName        string `parquet:"machineName"`
	MachineIP          string `parquet:"machineIp"`
	Properties         string `parquet:"properties"`
}

// Record returns the webhook-shaped record of a row (for checking objects).
func (r *ParquetRow) Record() Record {
	return Record{EnvironmentID: r.EnvironmentID, EnvironmentName: r.EnvironmentName, Key: r.Key,
		BucketingKey: r.BucketingKey, Split: r.SplitName, Treatment: r.Treatment, Label: r.Label,
		Time: r.Timestamp, SplitVersionNumber: r.SplitVersion, MachineName: r.MachineName,
		MachineIP: r.MachineIP, SDK: r.SDK, SDKVersion: r.SDKVersion, Properties: r.Properties}
}

// rowGroupRows bounds a row group: large enough for efficient scans, small enough that
// the writer's buffers stay within tens of MB.
const rowGroupRows = 128 << 10

// writeParquet writes the kept records of c, binary impressions, as one Parquet file.
func writeParquet(c *Chunk, es []entry, keep []bool, w io.Writer) error {
	pw := parquet.NewWriter(w, parquetSchema, parquet.Compression(&parquet.Snappy),
		parquet.MaxRowsPerRowGroup(rowGroupRows), parquet.CreatedBy("outflow", "", ""))
	rows, n := make([]parquet.Row, 1024), 0 // each row's values reused from batch to batch
	flush := func() error {
		_, err := pw.WriteRows(rows[:n])
		n = 0
		return err
	}
	err := c.each(es, keep, func(rec []byte) error {
		imp, err := impression.Unmarshal(rec)
		if err != nil {
			return err
		}
		rows[n] = appendParquetRow(rows[n][:0], &imp)
		if n++; n == len(rows) {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if cerr := pw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("encode: parquet: %w", err)
	}
	return nil
}

// Object is a finished data object, ready to upload.
type Object struct {
	Records    int // unique impressions in the object
	Duplicates int // copies dropped
	// IDs are the object's impressions' ids, each once, in no order; Digest names
	// them (SetDigest).
	IDs    []uuid.UUID
	Digest string
	open   func() io.ReadCloser
	size   atomic.Int64
}

// Open returns the object's bytes. Close it when done, read or not.
func (o *Object) Open() io.ReadCloser { return o.open() }

// Bytes is the size of the object, once it has been read to its end.
func (o *Object) Bytes() int64 { return o.size.Load() }

// FinishObject turns a group's chunk into its data object in format f. NDJSON and CSV
// objects are the chunk's gzip members, used as they are when there is nothing to
// drop; a Parquet object is written as it is read, row group by row group.
func FinishObject(c Chunk, f Format) (*Object, error) {
	if f != Parquet {
		d, err := c.Finish(Header(f))
		if err != nil {
			return nil, err
		}
		o := &Object{Records: d.Records, Duplicates: d.Duplicates, IDs: d.IDs, Digest: d.Digest,
			open: func() io.ReadCloser { return io.NopCloser(d.Reader()) }}
		if d.Bytes <= smallObject {
			// A stream that stores can send with its length known, without
			// copying it into buffers of their own (s3io: a PutObject).
			o.open = func() io.ReadCloser { return readSeekCloser{d.ReadSeeker()} }
		}
		o.size.Store(d.Bytes)
		return o, nil
	}
	c.flush()
	es, err := c.entries()
	if err != nil {
		return nil, err
	}
	seen := firstSeen(es)
	keep := seen.keep
	o := &Object{Records: c.N, IDs: seen.ids, Digest: seen.digest()}
	for _, k := range keep {
		if !k {
			o.Records--
			o.Duplicates++
		}
	}
	o.open = func() io.ReadCloser {
		pr, pw := io.Pipe()
		go func() { // ends when the file is written or the reader is closed
			pw.CloseWithError(writeParquet(&c, es, keep, &counter{w: pw, n: &o.size}))
		}()
		return pr
	}
	return o, nil
}

// smallObject is the size up to which an object's bytes are joined into one slice:
// below a multipart upload's part.
const smallObject = 8 << 20

// readSeekCloser is an object's bytes in memory: an io.ReadSeeker that closes.
type readSeekCloser struct{ io.ReadSeeker }

func (readSeekCloser) Close() error { return nil }

type counter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *counter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// ReadParquet reads the rows of a Parquet data object.
func ReadParquet(b []byte) ([]ParquetRow, error) {
	r := parquet.NewGenericReader[ParquetRow](bytes.NewReader(b))
	defer r.Close()
	rows := make([]ParquetRow, r.NumRows())
	n, err := r.Read(rows)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("encode: parquet: %w", err)
	}
	return rows[:n], nil
}
