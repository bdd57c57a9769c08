package amplitudeio

import (
	"cmp"
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/outflow/outflow/io/delivery"
)

// throttleHold is how long events Amplitude throttled per user are held back, unless
// Retry-After asks for longer.
var throttleHold = 15 * time.Second // a variable for tests

// answer is the part of Amplitude's error bodies that names events by index, and
// users and devices by id.
type answer struct {
	ThrottledEvents           []int              `json:"throttled_events"`
	ThrottledUsers            map[string]float64 `json:"throttled_users"`
	ThrottledDevices          map[string]float64 `json:"throttled_devices"`
	ExceededDailyQuotaUsers   map[string]float64 `json:"exceeded_daily_quota_users"`
	ExceededDailyQuotaDevices map[string]float64 `json:"exceeded_daily_quota_devices"`
	EPSThreshold              float64            `json:"eps_threshold"`
	EventsWithInvalidFields   map[string][]int   `json:"events_with_invalid_fields"`
	EventsWithMissingFields   map[string][]int   `json:"events_with_missing_fields"`
	SilencedEvents            []int              `json:"silenced_events"`
}

// batchEPS is the Batch API's limit of events a second per user or device (averaged
// over 30 s), for a 429 that does not say (eps_threshold).
const batchEPS = 1000

// heldKeys is how long to hold each user and device the answer names: throttled
// ones throttleHold, those over their daily quota until the next UTC day, when the
// quota is assumed to reset (Amplitude does not document when).
func (a *answer) heldKeys(now time.Time) map[string]time.Duration {
	keys := map[string]time.Duration{}
	for _, m := range []map[string]float64{a.ThrottledUsers, a.ThrottledDevices} {
		for k := range m {
			keys[k] = throttleHold
		}
	}
	nextDay := now.UTC().Truncate(24 * time.Hour).Add(24 * time.Hour).Sub(now)
	for _, m := range []map[string]float64{a.ExceededDailyQuotaUsers, a.ExceededDailyQuotaDevices} {
		for k := range m {
			keys[k] = nextDay
		}
	}
	return keys
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
				Held: a.ThrottledEvents, HoldFor: throttleHold, Resend: true,
				HeldKeys: a.heldKeys(time.Now()), KeyRate: cmp.Or(a.EPSThreshold, batchEPS)}
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
