package segmentio

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/transforms/encode"
)

// track is the struct Segment track calls were json.Marshal-ed from: what Item must
// keep writing, byte for byte.
type track struct {
	Type       string            `json:"type"`
	MessageID  string            `json:"messageId"`
	UserID     string            `json:"userId"`
	Event      string            `json:"event"`
	Timestamp  string            `json:"timestamp"`
	Properties encode.Properties `json:"properties"`
}

// FuzzItemAgrees: Item writes json.Marshal's bytes for any field values, HTML
// characters, control characters and invalid UTF-8 included.
func FuzzItemAgrees(f *testing.F) {
	for _, s := range []string{"", "plain", `<a href="x">&amp;</a>`, "tab\t\u2028\xff", "é日本"} {
		f.Add(s, "user-1", int64(1767225600123))
	}
	f.Fuzz(func(t *testing.T, s, k string, tm int64) {
		cfg := Config{Event: s + " exposure"}
		imp := impression.Impression{Tenant: "acme", EnvironmentID: s, EnvironmentName: k, Key: k, BucketingKey: s,
			Split: s, Treatment: k, Label: s, Time: tm, SplitVersionNumber: tm / 3, SDK: s, SDKVersion: k}
		imp.ID = imp.ComputeID()
		want, err := json.Marshal(track{Type: "track", MessageID: imp.ID.String(), UserID: imp.Key, Event: cfg.Event,
			Timestamp:  time.UnixMilli(imp.Time).UTC().Format("2006-01-02T15:04:05.000Z"),
			Properties: encode.NewProperties(&imp)})
		if err != nil {
			t.Fatal(err)
		}
		got, err := (&destination{cfg: cfg}).Item(&imp)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Item = %s, %v\nwant   %s", got, err, want)
		}
	})
}
