package delivery

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/impression"
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
