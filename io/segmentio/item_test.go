package segmentio

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/io/delivery/deliverytest"
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

// FuzzItemAgrees: Item writes json.Marshal's bytes.
func FuzzItemAgrees(f *testing.F) {
	cfg := Config{Event: "split <impression> & more"}
	deliverytest.FuzzItems(f, func(imp *impression.Impression, _ bool) ([]byte, error) {
		return json.Marshal(track{Type: "track", MessageID: imp.ID.String(), UserID: imp.Key, Event: cfg.Event,
			Timestamp:  time.UnixMilli(imp.Time).UTC().Format("2006-01-02T15:04:05.000Z"),
			Properties: encode.NewProperties(imp)})
	}, func(imp *impression.Impression, _ bool) ([]byte, error) {
		return (&destination{cfg: cfg}).Item(imp)
	})
}
