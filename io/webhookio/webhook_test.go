package webhookio_test

import (
	"compress/gzip"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	"github.com/outflow/outflow/internal/configkit"
	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/io/delivery"
	"github.com/outflow/outflow/io/delivery/deliverytest"
	"github.com/outflow/outflow/io/webhookio"
)

func TestMain(m *testing.M) { ptest.Main(m) }

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func sink(gzip bool) deliverytest.Sink {
	return deliverytest.Sink{
		Sim: destsim.Options{Kind: destsim.Webhook, Secret: secret, Tenant: deliverytest.Tenant},
		Target: func(id, url string) delivery.Target {
			raw, _ := json.Marshal(webhookio.Config{URL: url, Secret: configkit.Secret(secret), Gzip: gzip})
			return delivery.Target{ID: id, Kind: webhookio.Kind, Policy: webhookio.Defaults, Settings: raw}
		},
		Write: webhookio.Write,
	}
}

func TestConformance(t *testing.T) { deliverytest.Run(t, sink(true)) }

func TestGoneStopsAndDeadLetters(t *testing.T) {
	o := sink(false).Sim
	o.Status = http.StatusGone
	sim, err := destsim.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	imps := deliverytest.Impressions(50)
	got := deliverytest.Deliver(t, sink(false), sim, delivery.Config{MaxBatchEvents: 5}, imps)
	if got.Err != nil {
		t.Fatal(got.Err)
	}
	if len(got.DeadLetter) != len(imps) {
		t.Fatalf("%d dead-lettered, want %d", len(got.DeadLetter), len(imps))
	}
	for _, r := range got.DeadLetter {
		if !strings.Contains(r.Reason, "gone") {
			t.Fatalf("reason %q does not say the endpoint is gone", r.Reason)
		}
	}
	// Once gone, the destination gets no more requests: at most those in flight.
	if got.Status.Requests > delivery.DefaultMaxInFlight {
		t.Errorf("%d requests to a gone endpoint", got.Status.Requests)
	}
}

// Without allow_private_destinations, a webhook that resolves to loopback is refused
// when connecting, whatever its name: nothing reaches it, everything is dead-lettered.
func TestPrivateAddressRefused(t *testing.T) {
	sim, err := destsim.Start(sink(false).Sim)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	s := sink(false)
	target := s.Target
	s.Target = func(id, url string) delivery.Target {
		tg := target(id, strings.Replace(url, "127.0.0.1", "localhost", 1))
		return tg
	}
	imps := deliverytest.Impressions(10)
	got := deliverytest.DeliverPrivate(t, s, sim, delivery.Config{MaxBatchEvents: 5}, imps, false)
	if got.Err != nil {
		t.Fatal(got.Err)
	}
	if got.Status.Requests != 0 {
		t.Errorf("%d requests reached a loopback address", got.Status.Requests)
	}
	if len(got.DeadLetter) != len(imps) || !strings.Contains(got.DeadLetter[0].Reason, "private, loopback or link-local") {
		t.Errorf("%d dead-lettered, first %+v", len(got.DeadLetter), got.DeadLetter)
	}
}

// A redirect is an answer, not an instruction: it is never followed, so a webhook
// cannot bounce outflow to an address the guard would refuse.
func TestRedirectNotFollowed(t *testing.T) {
	var hits atomic.Int32
	inner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer inner.Close()
	redirect := httptest.NewServer(http.RedirectHandler(inner.URL, http.StatusTemporaryRedirect))
	defer redirect.Close()
	sim, _ := destsim.Start(sink(false).Sim) // unused by requests; Deliver needs one
	defer sim.Close()
	s := sink(false)
	target := s.Target
	s.Target = func(id, _ string) delivery.Target { return target(id, redirect.URL) }
	got := deliverytest.Deliver(t, s, sim, delivery.Config{}, deliverytest.Impressions(3))
	if hits.Load() != 0 {
		t.Errorf("the redirect was followed %d times", hits.Load())
	}
	if len(got.DeadLetter) != 3 || !strings.Contains(got.DeadLetter[0].Reason, "307") {
		t.Errorf("dead letters %+v", got.DeadLetter)
	}
}

func TestSignatureAndID(t *testing.T) {
	raw, _ := json.Marshal(webhookio.Config{URL: "https://hooks.example.com/x", Secret: configkit.Secret(secret), Gzip: true})
	d, err := delivery.NewDestination(webhookio.Kind, raw)
	if err != nil {
		t.Fatal(err)
	}
	imps := deliverytest.Impressions(2)
	var items [][]byte
	for i := range imps {
		item, _ := d.Item(&imps[i])
		if strings.Contains(string(item), "tenant") {
			t.Errorf("record carries the tenant: %s", item)
		}
		if want := `{"id":"` + imps[i].ID.String() + `",`; !strings.HasPrefix(string(item), want) {
			t.Errorf("record %s does not begin with the impression id: %s", item, want)
		}
		items = append(items, item)
	}
	b := &delivery.Batch{ID: "hook_1767225600000_001_00003"}
	body := delivery.Body(d, items)
	r1, _ := d.Request(b, body, time.Unix(1767225600, 0))
	r2, _ := d.Request(b, body, time.Unix(1767225700, 0))
	if r1.Header.Get("webhook-id") != r2.Header.Get("webhook-id") || r1.Header.Get("webhook-id") != webhookio.MessageID(b.ID) {
		t.Errorf("webhook-id differs between attempts: %s %s", r1.Header.Get("webhook-id"), r2.Header.Get("webhook-id"))
	}
	if other, _ := d.Request(&delivery.Batch{ID: b.ID + ".0"}, body, time.Unix(1767225600, 0)); other.Header.Get("webhook-id") == r1.Header.Get("webhook-id") {
		t.Error("two batches share a webhook-id")
	}
	if r1.Header.Get("Content-Encoding") != "gzip" || r1.Header.Get("webhook-timestamp") != "1767225600" {
		t.Errorf("headers %v", r1.Header)
	}
	// The signature is over the uncompressed body, with the decoded key.
	zr, _ := gzip.NewReader(r1.Body)
	body, _ = io.ReadAll(zr)
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(r1.Header.Get("webhook-id") + ".1767225600." + string(body)))
	if want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)); r1.Header.Get("webhook-signature") != want {
		t.Errorf("signature %s, want %s", r1.Header.Get("webhook-signature"), want)
	}
	var recs []map[string]any
	if err := json.Unmarshal(body, &recs); err != nil || len(recs) != 2 {
		t.Errorf("body %s: %v", body, err)
	}
}
