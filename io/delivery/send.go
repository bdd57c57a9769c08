package delivery

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// call is one request in flight, owned by the worker's registry until a drain of its
// key collects the answer. It holds the batch it sends, so collecting needs no state.
type call struct {
	batch      Batch // as sent, with its history before this attempt
	at         time.Time
	done       chan struct{}
	notSent    bool // the destination was paused or gone when the slot came
	resp       *Response
	outcome    Outcome
	retryAfter time.Duration
	sentAt     time.Time
	bytes      int64 // request body, as sent
}

func (c *call) finished() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// calls is where a drain starts requests and finds their answers. Requests run in the
// background of the worker (inflight); tests use a fake clock instead.
type calls interface {
	get(id string) *call
	forget(id string)
	start(d *dest, key string, b Batch, at time.Time) *call
}

// inflight is the worker's registry of requests in flight, by entry.key. A runner that
// moves a key to another worker loses it: the batch is then sent again (at least once).
type inflight struct{ m sync.Map }

var workerCalls = &inflight{}

func (r *inflight) get(id string) *call {
	if c, ok := r.m.Load(id); ok {
		return c.(*call)
	}
	return nil
}

func (r *inflight) forget(id string) { r.m.Delete(id) }

// start sends b at time at (within maxSchedule) in the background. The body is
// encoded first, then the request waits for a place on the wire (limiter.enter),
// which checks the destination's pause last, and only then is the request built:
// no request goes out after a Retry-After came in while it waited, and a signature's
// timestamp is the time it leaves.
func (r *inflight) start(d *dest, key string, b Batch, at time.Time) *call {
	c := &call{batch: b, at: at, done: make(chan struct{})}
	r.m.Store(key, c)
	go func() {
		defer close(c.done)
		time.Sleep(time.Until(at))
		body, err := d.body(&b)
		if err != nil {
			d.lim.cancel()
			c.fail(d, err)
			return
		}
		if !d.lim.enter() {
			d.lim.cancel()
			c.notSent = true
			return
		}
		req, err := d.d.Request(&b, body, time.Now())
		if err != nil {
			d.lim.exit()
			c.fail(d, fmt.Errorf("build request: %w", err))
			return
		}
		c.sentAt, c.bytes = time.Now(), req.ContentLength
		c.resp = send(context.Background(), d.client, req, d.Policy.Timeout.D())
		c.outcome = settle(d.d.Classify(c.resp, &b), &b)
		if c.resp.Header != nil {
			c.retryAfter = RetryAfter(c.resp.Header, time.Now())
		}
		d.lim.done(time.Now(), c.outcome, c.retryAfter, time.Since(c.sentAt))
	}()
	return c
}

// fail answers c with err, a request that could not be made.
func (c *call) fail(d *dest, err error) {
	c.sentAt, c.resp = time.Now(), &Response{Err: err}
	c.outcome = d.d.Classify(c.resp, &c.batch)
}

// body encodes b's events in the destination's frame.
func (d *dest) body(b *Batch) ([]byte, error) {
	items := make([][]byte, len(b.Imps))
	for i := range b.Imps {
		item, err := d.d.Item(&b.Imps[i])
		if err != nil {
			return nil, fmt.Errorf("encode: %w", err)
		}
		items[i] = item
	}
	return Body(d.d, items), nil
}

// Body is a request body of d: its frame around the items, joined by commas, built
// once in a buffer of the size it needs.
func Body(d Destination, items [][]byte) []byte {
	open, closing := d.Frame()
	size := len(open) + len(closing) + len(items)
	for _, item := range items {
		size += len(item)
	}
	body := make([]byte, 0, size)
	body = append(body, open...)
	for i, item := range items {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, item...)
	}
	return append(body, closing...)
}
