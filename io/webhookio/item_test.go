package webhookio

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/transforms/encode"
)

// record is the struct webhook items were json.Marshal-ed from: what Item must keep
// writing, byte for byte (receivers verify signatures over these bodies).
type record struct {
	ID string `json:"id"`
	encode.Record
}

// FuzzItemAgrees: Item writes json.Marshal's bytes for any field values, HTML
// characters, control characters and invalid UTF-8 included.
func FuzzItemAgrees(f *testing.F) {
	for _, s := range []string{"", "plain", `<a href="x">&amp;</a>`, "tab\t\u2028\xff", "é日本"} {
		f.Add(s, "user-1", int64(1767225600123))
	}
	d := &destination{}
	f.Fuzz(func(t *testing.T, s, k string, tm int64) {
		imp := impression.Impression{Tenant: "acme", EnvironmentID: s, EnvironmentName: k, Key: k + s, BucketingKey: s,
			Split: s, Treatment: k, Label: s, Time: tm, SplitVersionNumber: tm / 3, MachineName: s, MachineIP: k,
			SDK: s, SDKVersion: k, Properties: s}
		imp.ID = imp.ComputeID()
		want, err := json.Marshal(record{imp.ID.String(), encode.NewRecord(&imp)})
		if err != nil {
			t.Fatal(err)
		}
		got, err := d.Item(&imp)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Item = %s, %v\nwant   %s", got, err, want)
		}
	})
}
