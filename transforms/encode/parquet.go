package encode

import (
	"bytes"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/parquet-go/parquet-go"

	"github.com/outflow/outflow/internal/impression"
)

// ParquetRow is a row of a Parquet data object: the columns of the vendor's S3 export,
// so users' existing Athena tables read it unchanged, then the other impression
// fields (CONTRACT §4). Strings are UTF-8 byte arrays; times are INT64 Unix ms.
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

// NewParquetRow returns the Parquet row of imp. The traffic type is not in the
// impression, so it stays empty.
func NewParquetRow(imp *impression.Impression) ParquetRow {
	return ParquetRow{Key: imp.Key, Label: imp.Label, Treatment: imp.Treatment, SplitName: imp.Split,
		SplitVersion: imp.SplitVersionNumber, EnvironmentID: imp.EnvironmentID, SDK: imp.SDK,
		SDKVersion: imp.SDKVersion, Timestamp: imp.Time, ReceptionTimestamp: imp.ReceivedAt,
		EnvironmentName: imp.EnvironmentName, BucketingKey: imp.BucketingKey, MachineName: imp.MachineName,
		MachineIP: imp.MachineIP, Properties: imp.Properties}
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
	pw := parquet.NewGenericWriter[ParquetRow](w, parquet.Compression(&parquet.Snappy),
		parquet.MaxRowsPerRowGroup(rowGroupRows), parquet.CreatedBy("outflow", "", ""))
	rows := make([]ParquetRow, 0, 1024)
	flush := func() error {
		_, err := pw.Write(rows)
		rows = rows[:0]
		return err
	}
	err := c.each(es, keep, func(rec []byte) error {
		imp, err := impression.Unmarshal(rec)
		if err != nil {
			return err
		}
		if rows = append(rows, NewParquetRow(&imp)); len(rows) == cap(rows) {
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
	open       func() io.ReadCloser
	size       atomic.Int64
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
		o := &Object{Records: d.Records, Duplicates: d.Duplicates,
			open: func() io.ReadCloser { return io.NopCloser(d.Reader()) }}
		if d.Bytes <= smallObject {
			// One slice that stores can send with its length known, without
			// copying it into buffers of their own (s3io: a PutObject). Joined
			// when opened: a writer holds many objects waiting for an upload slot.
			o.open = func() io.ReadCloser { return readSeekCloser{bytes.NewReader(bytes.Join(d.Members, nil))} }
		}
		o.size.Store(d.Bytes)
		return o, nil
	}
	c.flush()
	es, err := c.entries()
	if err != nil {
		return nil, err
	}
	keep := firstSeen(es)
	o := &Object{Records: c.N}
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
type readSeekCloser struct{ *bytes.Reader }

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
