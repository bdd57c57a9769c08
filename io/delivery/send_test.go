package delivery

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/oplog"
)

// atWire is a destination that notes the time its requests are built with.
type atWire struct {
	stub
	url   string
	built time.Time
}

func (a *atWire) Request(_ *Batch, body []byte, now time.Time) (*http.Request, error) {
	a.built = now
	return http.NewRequest(http.MethodPost, a.url, bytes.NewReader(body))
}

// A request that waits for a place on the wire is built, and so signed, when it gets
// one, not when it was scheduled: a webhook's timestamp is never older than its wait.
func TestRequestBuiltAtTheWire(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer srv.Close()
	p := Config{RequestsPerSecond: 100, MaxInFlight: 1}.WithDefaults(Config{})
	dst := &atWire{url: srv.URL}
	d := &dest{Target: Target{ID: "wire", Policy: p}, d: dst, lim: newLimiter(p), client: clientFor("wire-test", p, true)}
	at, _, ok := d.lim.acquire(time.Now(), time.Second)
	if !ok {
		t.Fatal("a fresh limiter refused")
	}
	d.lim.mu.Lock()
	d.lim.sending++ // another request holds the only place on the wire
	d.lim.mu.Unlock()
	c := (&inflight{}).start(d, "k", Batch{ID: "b", Imps: []impression.Impression{{Key: "u1"}}}, at)
	time.Sleep(300 * time.Millisecond)
	freed := time.Now()
	d.lim.mu.Lock()
	d.lim.sending--
	d.lim.wire.Broadcast()
	d.lim.mu.Unlock()
	<-c.done
	if c.outcome.Kind != Delivered {
		t.Fatalf("outcome %+v", c.outcome)
	}
	if dst.built.Before(freed) {
		t.Errorf("the request was built at %v, %v before its place on the wire came", dst.built, freed.Sub(dst.built))
	}
}

// What operators must hear of is logged once each, while it lasts: the destination
// down and back, gone (410), and a Retry-After of a minute or more.
func TestLogChanges(t *testing.T) {
	var out bytes.Buffer
	defer oplog.Use(slog.New(slog.NewTextHandler(&out, nil)))()
	p := Config{RequestsPerSecond: 10}.WithDefaults(Config{})
	d := &dest{Target: Target{ID: "acme-hook", Policy: p}, lim: newLimiter(p)}
	now := time.Now()
	for range openAfter {
		d.lim.done(now, Outcome{Kind: Retry, Status: 500}, 0, time.Millisecond)
	}
	d.logChanges(context.Background())
	d.logChanges(context.Background())
	d.lim.done(now, Outcome{Kind: Throttle, Status: 429}, 5*time.Minute, time.Millisecond) // not a failure: closes the circuit
	d.lim.done(now, Outcome{Kind: Gone, Status: 410, Reason: "HTTP 410 Gone"}, 0, time.Millisecond)
	d.logChanges(context.Background())
	d.logChanges(context.Background())
	for _, want := range []string{"level=WARN msg=\"the destination fails every request", "level=INFO msg=\"the destination answers again",
		"level=ERROR msg=\"the endpoint is gone (410)", "level=WARN msg=\"the destination asked for a long pause"} {
		if n := strings.Count(out.String(), want); n != 1 {
			t.Errorf("%q logged %d times, want once:\n%s", want, n, out.String())
		}
	}
	if !strings.Contains(out.String(), "integration=acme-hook") {
		t.Errorf("the lines do not name the integration:\n%s", out.String())
	}
}
