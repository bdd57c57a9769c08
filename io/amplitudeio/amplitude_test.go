package amplitudeio

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	"github.com/outflow/outflow/internal/configkit"
	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/metricname"
	"github.com/outflow/outflow/io/delivery"
	"github.com/outflow/outflow/io/delivery/deliverytest"
)

func TestMain(m *testing.M) { ptest.Main(m) }

const apiKey = "amp-test-key-1"

func sink() deliverytest.Sink {
	return deliverytest.Sink{
		Sim: destsim.Options{Kind: destsim.Amplitude, APIKey: apiKey},
		Target: func(id, url string) delivery.Target {
			raw, _ := json.Marshal(Config{APIKey: configkit.Secret(apiKey), Endpoint: url, EventType: DefaultEventType, IDField: "user_id"})
			return delivery.Target{ID: id, Kind: Kind, Policy: Defaults, Settings: raw}
		},
		Write: Write,
	}
}

func TestConformance(t *testing.T) { deliverytest.Run(t, sink()) }

// A 429 naming throttled_events holds those back, resends the others, and in the end
// every event is ingested once.
func TestThrottledEvents(t *testing.T) {
	defer func(d time.Duration) { throttleHold = d }(throttleHold)
	throttleHold = time.Second // instead of 15 s; the rule, not the wait, is under test

	o := sink().Sim
	o.ThrottleEvents, o.Seed = 0.2, 5
	sim, err := destsim.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	imps := deliverytest.Impressions(80)
	got := deliverytest.Deliver(t, sink(), sim, delivery.Config{MaxBatchEvents: 20}, imps)
	if got.Err != nil {
		t.Fatal(got.Err)
	}
	for _, imp := range imps {
		if e := got.Events[imp.ID.String()]; e.Count != 1 {
			t.Errorf("event %s ingested %d times", imp.Key, e.Count)
		}
	}
	if got.Status.Throttled == 0 || got.Metrics[metricname.Throttled] == 0 || len(got.DeadLetter) > 0 {
		t.Errorf("status %+v, throttled metric %d, %d dead-lettered", got.Status, got.Metrics[metricname.Throttled], len(got.DeadLetter))
	}
}

func TestEventShape(t *testing.T) {
	d := &destination{cfg: Config{APIKey: "k", Endpoint: "https://api2.amplitude.com/", EventType: "get_treatment", IDField: "device_id"}}
	imp := deliverytest.Impressions(1)[0]
	item, err := d.Item(&imp)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"insert_id":"` + imp.ID.String() + `","device_id":"user-0","event_type":"get_treatment","time":1767225600000,` +
		`"event_properties":{"split":"new_checkout","treatment":"on","label":"default rule","environmentId":"env-1",` +
		`"environmentName":"production","splitVersionNumber":7,"bucketingKey":"","sdk":"go","sdkVersion":"6.7.0"}}`
	if string(item) != want {
		t.Errorf("event =\n%s\nwant\n%s", item, want)
	}
	req, err := d.Request(&delivery.Batch{}, delivery.Body(d, [][]byte{item}), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if req.URL.String() != "https://api2.amplitude.com/batch" {
		t.Errorf("URL %s", req.URL)
	}
	var body struct {
		APIKey  string            `json:"api_key"`
		Events  []json.RawMessage `json:"events"`
		Options map[string]int    `json:"options"`
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if body.APIKey != "k" || len(body.Events) != 1 || body.Options["min_id_length"] != 1 {
		t.Errorf("body %+v", body)
	}
}

func TestClassify(t *testing.T) {
	d := &destination{}
	o := d.Classify(&delivery.Response{Status: 429, Body: []byte(`{"code":429,"throttled_events":[1,3],"throttled_users":{"u":31}}`)}, nil)
	if o.Kind != delivery.Partial || len(o.Held) != 2 || !o.Resend || o.HoldFor != throttleHold || o.HeldKeys["u"] != throttleHold || o.KeyRate != batchEPS {
		t.Errorf("partial 429 -> %+v", o)
	}
	// A device over its daily quota waits for the next UTC day; the threshold named
	// paces the keys.
	o = d.Classify(&delivery.Response{Status: 429, Body: []byte(`{"code":429,"eps_threshold":30,"throttled_events":[0,1],"throttled_devices":{"d1":40},"exceeded_daily_quota_devices":{"d2":500001}}`)}, nil)
	if left := time.Until(time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)); o.KeyRate != 30 || o.HeldKeys["d1"] != throttleHold ||
		o.HeldKeys["d2"] < left-time.Minute || o.HeldKeys["d2"] > left+time.Minute {
		t.Errorf("429 naming a device over its quota -> %+v; want d2 held %v", o, left)
	}
	o = d.Classify(&delivery.Response{Status: 400, Body: []byte(`{"code":400,"events_with_invalid_fields":{"time":[0]},"events_with_missing_fields":{"event_type":[2]}}`)}, nil)
	if o.Kind != delivery.Partial || len(o.Rejected) != 2 || !o.Resend || !strings.Contains(o.Reason, "HTTP 400") {
		t.Errorf("400 naming events -> %+v", o)
	}
	if o := d.Classify(&delivery.Response{Status: 429, Body: []byte(`{"code":429}`)}, nil); o.Kind != delivery.Throttle {
		t.Errorf("plain 429 -> %+v", o)
	}
}
