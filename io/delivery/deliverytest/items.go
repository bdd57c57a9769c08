package deliverytest

import (
	"bytes"
	"testing"

	"github.com/outflow/outflow/internal/impression"
)

// FuzzItems runs a sink's item fuzz target: want is the bytes the sink's items must
// be (json.Marshal of the struct they were written from), item what its Item
// writes, for an impression whose fields are s and k, at time tm, and a flag the
// sink may use for a setting.
func FuzzItems(f *testing.F, want, item func(imp *impression.Impression, flag bool) ([]byte, error)) {
	for _, s := range []string{"", "plain", `<a href="x">&amp;</a>`, "tab\t\u2028\xff", "é日本"} {
		f.Add(s, "user-1", int64(1767225600123), false)
	}
	f.Fuzz(func(t *testing.T, s, k string, tm int64, flag bool) {
		imp := impression.Impression{Tenant: "acme", EnvironmentID: s, EnvironmentName: k, Key: k, BucketingKey: s,
			Split: s, Treatment: k, Label: s, Time: tm, SplitVersionNumber: tm / 3, MachineName: s, MachineIP: k,
			SDK: s, SDKVersion: k, Properties: s}
		imp.ID = imp.ComputeID()
		w, err := want(&imp, flag)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := item(&imp, flag); err != nil || !bytes.Equal(got, w) {
			t.Fatalf("Item = %s, %v\nwant   %s", got, err, w)
		}
	})
}
