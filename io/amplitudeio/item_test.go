package amplitudeio

import (
	"encoding/json"
	"testing"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/io/delivery/deliverytest"
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

// FuzzItemAgrees: Item writes json.Marshal's bytes, with either id field.
func FuzzItemAgrees(f *testing.F) {
	config := func(device bool) Config {
		if device {
			return Config{EventType: "split <impression>", IDField: "device_id"}
		}
		return Config{EventType: "$exposure", IDField: "user_id"}
	}
	deliverytest.FuzzItems(f, func(imp *impression.Impression, device bool) ([]byte, error) {
		e := event{InsertID: imp.ID.String(), EventType: config(device).EventType, Time: imp.Time,
			EventProperties: encode.NewProperties(imp)}
		if device {
			e.DeviceID = imp.Key
		} else {
			e.UserID = imp.Key
		}
		return json.Marshal(e)
	}, func(imp *impression.Impression, device bool) ([]byte, error) {
		return (&destination{cfg: config(device)}).Item(imp)
	})
}
