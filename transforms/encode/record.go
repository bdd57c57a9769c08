package encode

import (
	"github.com/outflow/outflow/internal/impression"
)

// Columns are the output field names of NDJSON and CSV records, in CONTRACT §1 order:
// every field but tenant (impression.Fields).
var Columns = impression.Fields[1:]

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

// AppendImpressionJSON appends imp as the JSON object of CONTRACT §1, tenant first,
// as json.Encoder with SetEscapeHTML(false) writes it: the impression of a dead letter.
func AppendImpressionJSON(b []byte, imp *impression.Impression) []byte {
	b = append(b, `{"`+impression.Fields[0]+`":`...)
	b = appendJSONString(b, imp.Tenant, false)
	b = AppendRecordFields(append(b, ','), imp, false)
	return append(b, '}')
}

// Append appends imp to dst as a record of format f (append.go): an NDJSON line or a
// CSV row with its line end, or the binary coding for Binary and Parquet.
func Append(f Format, dst []byte, imp *impression.Impression) []byte {
	switch f {
	case NDJSON:
		return appendNDJSON(dst, imp)
	case CSV:
		return appendCSV(dst, imp)
	case Binary, Parquet: // impressions, written out when the object is finished
		return impression.AppendBinary(dst, *imp)
	}
	panic("encode: no record encoder for format " + string(f)) // config.Load refuses unknown formats
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
