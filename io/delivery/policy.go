package delivery

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/outflow/outflow/internal/impression"
)

// The delivery policy of CONTRACT §5, as pure functions of the clock: what an answer
// means for the batch that was sent (decide), and when a failed batch may go again
// (retry). The drain applies their verdicts to state.

const (
	// Exponential backoff with jitter between retries of one batch.
	backoffBase = time.Second
	backoffMax  = 5 * time.Minute
)

// verdict is what to do with a batch after its answer: at most one part delivered,
// parts to dead-letter, parts to send again (with their history and NotBefore), and
// impressions to treat as new.
type verdict struct {
	delivered *Batch
	dead      []deadPart
	again     []Batch
	fresh     []impression.Impression // back among the new impressions
}

type deadPart struct {
	Batch
	status int
	reason string
}

func (v *verdict) deadLetter(b Batch, status int, reason string) {
	v.dead = append(v.dead, deadPart{b, status, reason})
}

// decide applies an answer o, which came with Retry-After pause, to b, sent at sentAt;
// b carries its history before this attempt. A 413 splits b into halves, or into
// p.MaxBatchEvents (what the destination was seen to take) if smaller.
func decide(now, sentAt time.Time, b Batch, o Outcome, pause time.Duration, p Config) verdict {
	var v verdict
	b.Attempts++
	if b.FirstTry == 0 {
		b.FirstTry = sentAt.UnixMilli()
	}
	b.Status, b.Reason = o.Status, o.Reason
	switch o.Kind {
	case Delivered:
		v.delivered = &b
	case Retry, Throttle:
		v.retry(now, b, max(p.backoff(b.Attempts), pause), p)
	case Split:
		if len(b.Imps) == 1 {
			v.deadLetter(b, o.Status, "the destination refuses even a single event as too large: "+o.Reason)
			break
		}
		for _, piece := range b.pieces(p.MaxBatchEvents) {
			piece.NotBefore = 0
			v.again = append(v.again, piece)
		}
	case Partial:
		v.partial(now, b, o, pause, p)
	case Gone:
		v.deadLetter(b, o.Status, "the endpoint is gone: "+o.Reason)
	default:
		v.deadLetter(b, o.Status, o.Reason)
	}
	return v
}

// retry sends b again after wait, unless its retries have run out
// (max_retry_duration from its first send). The last attempt is at that horizon,
// however long the wait the schedule asks for.
func (v *verdict) retry(now time.Time, b Batch, wait time.Duration, p Config) {
	spent, limit := now.Sub(time.UnixMilli(b.FirstTry)), p.MaxRetryDuration.D()
	if spent >= limit {
		v.deadLetter(b, b.Status, fmt.Sprintf("gave up after %d attempts over %v: %s",
			b.Attempts, spent.Round(time.Second), b.Reason))
		return
	}
	b.NotBefore = now.Add(min(wait, limit-spent)).UnixMilli()
	v.again = append(v.again, b)
}

// backoff is the wait before attempt n+1 (retry_schedule, or exponential), with
// jitter so that batches failed together do not retry together.
func (p Config) backoff(n int) time.Duration {
	if s := p.RetrySchedule; len(s) > 0 {
		d := s[min(n, len(s))-1].D()
		return d - d/10 + rand.N(d/5+1)
	}
	d := backoffMax
	if n < 20 {
		d = min(backoffMax, backoffBase<<(n-1))
	}
	return d/2 + rand.N(d/2+1)
}

// partial handles an answer about some items: rejected ones are dead-lettered, held
// ones wait at least HoldFor, the rest are delivered or sent again. Held and resent
// parts obey max_retry_duration like any retry.
func (v *verdict) partial(now time.Time, b Batch, o Outcome, pause time.Duration, p Config) {
	var held, rejected, rest []int
	isHeld, isRejected := map[int]bool{}, map[int]bool{}
	for _, i := range o.Held {
		if i >= 0 && i < len(b.Imps) {
			isHeld[i] = true
		}
	}
	for _, i := range o.Rejected {
		if i >= 0 && i < len(b.Imps) && !isHeld[i] {
			isRejected[i] = true
		}
	}
	for i := range b.Imps {
		switch {
		case isHeld[i]:
			held = append(held, i)
		case isRejected[i]:
			rejected = append(rejected, i)
		default:
			rest = append(rest, i)
		}
	}
	if len(rejected) > 0 {
		v.deadLetter(b.part(rejected), o.Status, o.Reason)
	}
	// Held items of a key the destination named go back among the new impressions,
	// where the key's hold and pace decide when they go (limiter.admit): a throttled
	// user is not a failed batch, and spends no retry budget. The others wait HoldFor.
	var others []int
	for _, i := range held {
		if _, named := o.HeldKeys[b.Imps[i].Key]; named {
			v.fresh = append(v.fresh, b.Imps[i])
		} else {
			others = append(others, i)
		}
	}
	if len(others) > 0 {
		v.retry(now, b.part(others), max(o.HoldFor, pause), p)
	}
	if len(rest) > 0 {
		r := b.part(rest)
		if !o.Resend {
			v.delivered = &r
			return
		}
		v.retry(now, r, pause, p)
	}
}

// deadClass is the reason class (metricname.DeadLetterReasons) of a batch
// dead-lettered after an answer of status.
func deadClass(status int) string {
	switch {
	case status == http.StatusGone:
		return "gone"
	case status == http.StatusRequestEntityTooLarge:
		return "too_large"
	case status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests:
		return "rejected"
	}
	return "retries_exhausted"
}
