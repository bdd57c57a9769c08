package amplitudeio

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/io/delivery"
	"github.com/outflow/outflow/transforms/encode"
)

// destination is Amplitude's Batch API.
type destination struct{ cfg Config }

func newDestination(cfg Config) (delivery.Destination, error) { return &destination{cfg: cfg}, nil }

// Limits: the Batch API takes up to 2,000 events and 20 MB per request.
func (d *destination) Limits() delivery.Limits {
	return delivery.Limits{MaxEvents: 2000, MaxBytes: 20_000_000, MaxItem: 1 << 20}
}

// Item is one Amplitude event (CONTRACT §4): insert_id, user_id or device_id,
// event_type, time and event_properties, written by appending as json.Marshal wrote
// the struct it was (FuzzItemAgrees).
func (d *destination) Item(imp *impression.Impression) ([]byte, error) {
	b := make([]byte, 0, 512)
	b = append(b, `{"insert_id":"`...)
	b = append(b, imp.ID.String()...)
	b = append(b, '"')
	if imp.Key != "" { // omitted when empty, as its json tag said
		if d.cfg.IDField == "device_id" {
			b = append(b, `,"device_id":`...)
		} else {
			b = append(b, `,"user_id":`...)
		}
		b = encode.AppendJSONString(b, imp.Key)
	}
	b = encode.AppendJSONString(append(b, `,"event_type":`...), d.cfg.EventType)
	b = strconv.AppendInt(append(b, `,"time":`...), imp.Time, 10)
	b = encode.AppendProperties(append(b, `,"event_properties":`...), imp)
	return append(b, '}'), nil
}

// Frame is the request body around the events. min_id_length 1 keeps Amplitude from
// dropping events whose key is shorter than its default of 5 characters.
func (d *destination) Frame() (open, close []byte) {
	key, _ := json.Marshal(d.cfg.APIKey.Reveal())
	return append(append([]byte(`{"api_key":`), key...), `,"events":[`...), []byte(`],"options":{"min_id_length":1}}`)
}

func (d *destination) Request(_ *delivery.Batch, body []byte, _ time.Time) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodPost, strings.TrimSuffix(d.cfg.Endpoint, "/")+"/batch", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}
