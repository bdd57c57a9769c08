package segmentio

import (
	"bytes"
	"net/http"
	"strings"
	"time"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/io/delivery"
	"github.com/outflow/outflow/transforms/encode"
)

// destination is Segment's HTTP Tracking API.
type destination struct{ cfg Config }

func newDestination(cfg Config) (delivery.Destination, error) { return &destination{cfg: cfg}, nil }

// Limits: Segment takes at most 2,500 events and 500 KB per batch and 32 KB per
// event; it answers 200 to larger batches but drops events, so they are never sent.
func (d *destination) Limits() delivery.Limits {
	return delivery.Limits{MaxEvents: 2500, MaxBytes: 500_000, MaxItem: 32_000}
}

// Frame: the body is {"batch": [...]}.
func (d *destination) Frame() (open, close []byte) { return []byte(`{"batch":[`), []byte(`]}`) }

// Item is one Segment track call (CONTRACT §4): type, messageId, userId, event,
// timestamp and properties, written by appending as json.Marshal wrote the struct it
// was (FuzzItemAgrees).
func (d *destination) Item(imp *impression.Impression) ([]byte, error) {
	b := make([]byte, 0, 512)
	b = append(b, `{"type":"track","messageId":"`...)
	b = append(b, imp.ID.String()...)
	b = encode.AppendJSONString(append(b, `","userId":`...), imp.Key)
	b = encode.AppendJSONString(append(b, `,"event":`...), d.cfg.Event)
	b = append(b, `,"timestamp":"`...)
	b = time.UnixMilli(imp.Time).UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z")
	b = encode.AppendProperties(append(b, `","properties":`...), imp)
	return append(b, '}'), nil
}

func (d *destination) Request(_ *delivery.Batch, body []byte, _ time.Time) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodPost, strings.TrimSuffix(d.cfg.Endpoint, "/")+"/v1/batch", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(d.cfg.WriteKey.Reveal(), "")
	return req, nil
}

// Classify: Segment's answers mean what they usually do.
func (d *destination) Classify(r *delivery.Response, _ *delivery.Batch) delivery.Outcome {
	return delivery.DefaultClassify(r)
}
