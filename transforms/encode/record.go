package encode

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"strconv"

	"github.com/outflow/outflow/internal/impression"
)

// Columns are the output field names of NDJSON and CSV records, in CONTRACT §1 order
// (every field but tenant).
var Columns = []string{"environmentId", "environmentName", "key", "bucketingKey", "split",
	"treatment", "label", "time", "splitVersionNumber", "machineName", "machineIp", "sdk",
	"sdkVersion", "properties"}

// Record is the webhook shape of an impression (CONTRACT §1 without tenant): NDJSON
// lines, webhook bodies and dead-letter entries all use it.
type Record struct {
	EnvironmentID      string `json:"environmentId"`
	EnvironmentName    string `json:"environmentName"`
	Key                string `json:"key"`
	BucketingKey       string `json:"bucketingKey"`
	Split              string `json:"split"`
	Treatment          string `json:"treatment"`
	Label              string `json:"label"`
	Time               int64  `json:"time"`
	SplitVersionNumber int64  `json:"splitVersionNumber"`
	MachineName        string `json:"machineName"`
	MachineIP          string `json:"machineIp"`
	SDK                string `json:"sdk"`
	SDKVersion         string `json:"sdkVersion"`
	Properties         string `json:"properties"`
}

// NewRecord returns the webhook shape of imp.
func NewRecord(imp *impression.Impression) Record {
	return Record{imp.EnvironmentID, imp.EnvironmentName, imp.Key, imp.BucketingKey,
		imp.Split, imp.Treatment, imp.Label, imp.Time, imp.SplitVersionNumber,
		imp.MachineName, imp.MachineIP, imp.SDK, imp.SDKVersion, imp.Properties}
}

// Impression is the impression r stands for, of tenant: the inverse of NewRecord.
// Records carry every field of the id but the tenant, so its ID can be computed.
func (r *Record) Impression(tenant string) impression.Impression {
	return impression.Impression{Tenant: tenant, EnvironmentID: r.EnvironmentID, EnvironmentName: r.EnvironmentName,
		Key: r.Key, BucketingKey: r.BucketingKey, Split: r.Split, Treatment: r.Treatment, Label: r.Label,
		Time: r.Time, SplitVersionNumber: r.SplitVersionNumber, MachineName: r.MachineName, MachineIP: r.MachineIP,
		SDK: r.SDK, SDKVersion: r.SDKVersion, Properties: r.Properties}
}

// Encoder appends impressions as NDJSON lines or CSV rows. It reuses its buffers, so
// keep one per goroutine.
type Encoder struct {
	format Format
	buf    bytes.Buffer
	json   *json.Encoder
	csv    *csv.Writer
	row    []string
}

// NewEncoder returns an encoder for format f (NDJSON or CSV).
func NewEncoder(f Format) *Encoder {
	e := &Encoder{format: f}
	switch f {
	case NDJSON:
		e.json = json.NewEncoder(&e.buf)
		e.json.SetEscapeHTML(false)
	case CSV:
		e.csv = csv.NewWriter(&e.buf)
		e.row = make([]string, len(Columns))
	case Binary, Parquet: // impressions, written out when the object is finished
	default:
		panic("encode: no record encoder for format " + string(f))
	}
	return e
}

// Header returns what starts a data object: the CSV header row, or nothing.
func (e *Encoder) Header() []byte {
	if e.format != CSV {
		return nil
	}
	e.buf.Reset()
	e.csv.Write(Columns)
	e.csv.Flush()
	return bytes.Clone(e.buf.Bytes())
}

// Append appends imp, with its line end, to dst.
func (e *Encoder) Append(dst []byte, imp *impression.Impression) []byte {
	if e.format == Binary || e.format == Parquet {
		return impression.AppendBinary(dst, *imp)
	}
	e.buf.Reset()
	if e.format == NDJSON {
		// Encoding a struct of strings and integers cannot fail.
		_ = e.json.Encode(NewRecord(imp))
		return append(dst, e.buf.Bytes()...)
	}
	r := e.row
	r[0], r[1], r[2], r[3], r[4] = imp.EnvironmentID, imp.EnvironmentName, imp.Key, imp.BucketingKey, imp.Split
	r[5], r[6] = imp.Treatment, imp.Label
	r[7] = strconv.FormatInt(imp.Time, 10)
	r[8] = strconv.FormatInt(imp.SplitVersionNumber, 10)
	r[9], r[10], r[11], r[12], r[13] = imp.MachineName, imp.MachineIP, imp.SDK, imp.SDKVersion, imp.Properties
	e.csv.Write(r)
	e.csv.Flush()
	return append(dst, e.buf.Bytes()...)
}

// Properties are the impression fields that analytics destinations (Amplitude's
// event_properties, Segment's properties) carry with each event (CONTRACT §4).
type Properties struct {
	Split              string `json:"split"`
	Treatment          string `json:"treatment"`
	Label              string `json:"label"`
	EnvironmentID      string `json:"environmentId"`
	EnvironmentName    string `json:"environmentName"`
	SplitVersionNumber int64  `json:"splitVersionNumber"`
	BucketingKey       string `json:"bucketingKey"`
	SDK                string `json:"sdk"`
	SDKVersion         string `json:"sdkVersion"`
}

// NewProperties returns the event properties of imp.
func NewProperties(imp *impression.Impression) Properties {
	return Properties{Split: imp.Split, Treatment: imp.Treatment, Label: imp.Label,
		EnvironmentID: imp.EnvironmentID, EnvironmentName: imp.EnvironmentName,
		SplitVersionNumber: imp.SplitVersionNumber, BucketingKey: imp.BucketingKey,
		SDK: imp.SDK, SDKVersion: imp.SDKVersion}
}
