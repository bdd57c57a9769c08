package amplitudeio

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/io/delivery"
	"github.com/outflow/outflow/transforms/encode"
)

// destination is Amplitude's Batch API.
type destination struct{ cfg Config }

func newDestination(cfg Config) (delivery.Destination, error) { return &destination{cfg: cfg}, nil }

// event is one Amplitude event (CONTRACT §4).
type event struct {
	InsertID        string            `json:"insert_id"`
	UserID          string            `json:"user_id,omitempty"`
	DeviceID        string            `json:"device_id,omitempty"`
	EventType       string            `json:"event_type"`
	Time            int64             `json:"time"`
	EventProperties encode.Properties `json:"event_properties"`
}

// Limits: the Batch API takes up to 2,000 events and 20 MB per request.
func (d *destination) Limits() delivery.Limits {
	return delivery.Limits{MaxEvents: 2000, MaxBytes: 20_000_000, MaxItem: 1 << 20}
}

func (d *destination) Item(imp *impression.Impression) ([]byte, error) {
	e := event{InsertID: imp.ID.String(), EventType: d.cfg.EventType, Time: imp.Time,
		EventProperties: encode.NewProperties(imp)}
	if d.cfg.IDField == "device_id" {
		e.DeviceID = imp.Key
	} else {
		e.UserID = imp.Key
	}
	return json.Marshal(e)
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
