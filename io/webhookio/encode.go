package webhookio

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/klauspost/compress/gzip"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/io/delivery"
	"github.com/outflow/outflow/transforms/encode"
)

// destination is a customer's webhook, signed per Standard Webhooks.
type destination struct {
	cfg Config
	key []byte
}

func newDestination(cfg Config) (delivery.Destination, error) {
	key, err := SigningKey(cfg.Secret)
	if err != nil {
		return nil, fmt.Errorf("webhookio: secret: %w", err)
	}
	return &destination{cfg: cfg, key: key}, nil
}

// Limits keep bodies small, as receivers prefer.
func (d *destination) Limits() delivery.Limits {
	return delivery.Limits{MaxEvents: 1000, MaxBytes: 1 << 20, MaxItem: 256 << 10}
}

// Frame: the body is a JSON array of records.
func (d *destination) Frame() (open, close []byte) { return []byte("["), []byte("]") }

// Item is the webhook record of imp: the vendor's record (every impression field but
// tenant, encode.Record) with the impression's id first, so receivers can drop the
// repeats a restart may send (CONTRACT §4). It is written by appending, as
// json.Marshal of that struct would write it (FuzzItemAgrees).
func (d *destination) Item(imp *impression.Impression) ([]byte, error) {
	b := make([]byte, 0, 512)
	b = append(b, `{"id":"`...)
	b = append(b, imp.ID.String()...)
	b = encode.AppendRecordFields(append(b, `",`...), imp, true)
	return append(b, '}'), nil
}

// idSpace makes webhook-ids: UUIDv5 of the batch id, which names the batch by its
// integration and its impressions' ids, so every retry and rerun of a batch carries
// the same id.
var idSpace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("urn:outflow:webhook"))

// MessageID is the webhook-id of a batch.
func MessageID(batchID string) string {
	return "msg_" + uuid.NewSHA1(idSpace, []byte(batchID)).String()
}

func (d *destination) Request(b *delivery.Batch, body []byte, now time.Time) (*http.Request, error) {
	id, ts := MessageID(b.ID), strconv.FormatInt(now.Unix(), 10)
	payload := body
	if d.cfg.Gzip {
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		zw.Write(body)
		if err := zw.Close(); err != nil {
			return nil, err
		}
		payload = z.Bytes()
	}
	req, err := http.NewRequest(http.MethodPost, d.cfg.URL, bytes.NewReader(payload))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if d.cfg.Gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", ts)
	req.Header.Set("webhook-signature", Sign(d.key, id, ts, body))
	return req, nil
}

// Sign is the Standard Webhooks signature of an uncompressed body.
func Sign(key []byte, id, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + timestamp + "."))
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Classify: 410 means the endpoint is gone; the rest as usual.
func (d *destination) Classify(r *delivery.Response, _ *delivery.Batch) delivery.Outcome {
	o := delivery.DefaultClassify(r)
	if r.Err == nil && r.Status == http.StatusGone {
		o.Kind = delivery.Gone
	}
	return o
}
