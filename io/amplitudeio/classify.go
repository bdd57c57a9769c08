package amplitudeio

import (
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/outflow/outflow/io/delivery"
)

// throttleHold is how long events Amplitude throttled per user are held back, unless
// Retry-After asks for longer.
var throttleHold = 15 * time.Second // a variable for tests

// answer is the part of Amplitude's error bodies that names events by index.
type answer struct {
	ThrottledEvents         []int            `json:"throttled_events"`
	EventsWithInvalidFields map[string][]int `json:"events_with_invalid_fields"`
	EventsWithMissingFields map[string][]int `json:"events_with_missing_fields"`
	SilencedEvents          []int            `json:"silenced_events"`
}

// Classify refines the default for Amplitude's partial answers: a 429 listing
// throttled_events holds only those events back, and a 400 naming bad events
// dead-letters them; in both cases nothing was ingested, so the rest is sent again.
func (d *destination) Classify(r *delivery.Response, _ *delivery.Batch) delivery.Outcome {
	o := delivery.DefaultClassify(r)
	var a answer
	if r.Err != nil || json.Unmarshal(r.Body, &a) != nil {
		return o
	}
	switch r.Status {
	case http.StatusTooManyRequests:
		if len(a.ThrottledEvents) > 0 {
			return delivery.Outcome{Kind: delivery.Partial, Status: r.Status, Reason: o.Reason,
				Held: a.ThrottledEvents, HoldFor: throttleHold, Resend: true}
		}
	case http.StatusBadRequest:
		bad := slices.Clone(a.SilencedEvents)
		for _, m := range []map[string][]int{a.EventsWithInvalidFields, a.EventsWithMissingFields} {
			for _, idx := range m {
				bad = append(bad, idx...)
			}
		}
		if len(bad) > 0 {
			return delivery.Outcome{Kind: delivery.Partial, Status: r.Status, Reason: o.Reason,
				Rejected: bad, Resend: true}
		}
	}
	return o
}
