package amplitudeio

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/transforms/encode"
)

// event is the struct Amplitude events were json.Marshal-ed from: what Item must
// keep writing, byte for byte.
type event struct {
	InsertID        string            `json:"insert_id"`
	UserID          string            `json:"user_id,omitempty"`
	DeviceID        string            `json:"device_id,omitempty"`
	EventType       string            `json:"event_type"`
	Time            int64             `json:"time"`
	EventProperties encode.Properties `json:"event_properties"`
}

// FuzzItemAgrees: Item writes json.Marshal's bytes, for either id field and any
// field values, HTML characters, control characters and invalid UTF-8 included.
func FuzzItemAgrees(f *testing.F) {
	for _, s := range []string{"", "plain", `<a href="x">&amp;</a>`, "tab\t\u2028\xff", "é日本"} {
		f.Add(s, "user-1", int64(1767225600123), false)
	}
	f.Fuzz(func(t *testing.T, s, k string, tm int64, device bool) {
		cfg := Config{EventType: s + "$exposure", IDField: "user_id"}
		if device {
			cfg.IDField = "device_id"
		}
		imp := impression.Impression{Tenant: "acme", EnvironmentID: s, EnvironmentName: k, Key: k, BucketingKey: s,
			Split: s, Treatment: k, Label: s, Time: tm, SplitVersionNumber: tm / 3, SDK: s, SDKVersion: k}
		imp.ID = imp.ComputeID()
		e := event{InsertID: imp.ID.String(), EventType: cfg.EventType, Time: imp.Time, EventProperties: encode.NewProperties(&imp)}
		if device {
			e.DeviceID = imp.Key
		} else {
			e.UserID = imp.Key
		}
		want, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := (&destination{cfg: cfg}).Item(&imp)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Item = %s, %v\nwant   %s", got, err, want)
		}
	})
}
