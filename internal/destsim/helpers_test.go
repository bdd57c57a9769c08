package destsim_test

import (
	"bytes"
	"compress/gzip"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/impression"
)

const (
	testTenant = "acme"
	testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" // base64 of 24 bytes
	testAPIKey = "amp-key-1"
	testWrite  = "seg-write-1"
)

// imp is the i-th test impression.
func imp(i int) impression.Impression {
	return impression.Impression{
		Tenant: testTenant, EnvironmentID: "env-1", EnvironmentName: "production",
		Key: fmt.Sprintf("user-%d", i), BucketingKey: "", Split: "new_checkout",
		Treatment: "on", Label: "default rule", Time: 1767225600000 + int64(i),
		SplitVersionNumber: 42, MachineName: "web-7", MachineIP: "10.1.2.3",
		SDK: "go", SDKVersion: "6.7.0", Properties: `{"plan":"pro"}`,
	}
}

func id(i int) string {
	m := imp(i)
	return m.ComputeID().String()
}

func props(m impression.Impression) map[string]any {
	return map[string]any{
		"split": m.Split, "treatment": m.Treatment, "label": m.Label,
		"environmentId": m.EnvironmentID, "environmentName": m.EnvironmentName,
		"splitVersionNumber": m.SplitVersionNumber, "bucketingKey": m.BucketingKey,
		"sdk": m.SDK, "sdkVersion": m.SDKVersion,
	}
}

// ampEvent is impression i as an Amplitude event.
func ampEvent(i int) map[string]any {
	m := imp(i)
	return map[string]any{
		"insert_id": m.ComputeID().String(), "user_id": m.Key, "event_type": "get_treatment",
		"time": m.Time, "event_properties": props(m),
	}
}

func ampBody(t *testing.T, key string, events ...map[string]any) []byte {
	return mustJSON(t, map[string]any{"api_key": key, "events": events, "options": map[string]any{"min_id_length": 1}})
}

func ampEvents(from, to int) []map[string]any {
	var evs []map[string]any
	for i := from; i < to; i++ {
		evs = append(evs, ampEvent(i))
	}
	return evs
}

// segMessage is impression i as a Segment track call.
func segMessage(i int) map[string]any {
	m := imp(i)
	return map[string]any{
		"type": "track", "messageId": m.ComputeID().String(), "userId": m.Key,
		"event": "get_treatment", "properties": props(m),
		"timestamp": time.UnixMilli(m.Time).UTC().Format("2006-01-02T15:04:05.000Z"),
	}
}

func segBody(t *testing.T, from, to int) []byte {
	var msgs []map[string]any
	for i := from; i < to; i++ {
		msgs = append(msgs, segMessage(i))
	}
	return mustJSON(t, map[string]any{"batch": msgs})
}

// hookRecord is impression i as a webhook record.
func hookRecord(i int) map[string]any {
	m := imp(i)
	return map[string]any{
		"environmentId": m.EnvironmentID, "environmentName": m.EnvironmentName, "key": m.Key,
		"bucketingKey": m.BucketingKey, "split": m.Split, "treatment": m.Treatment,
		"label": m.Label, "time": m.Time, "splitVersionNumber": m.SplitVersionNumber,
		"machineName": m.MachineName, "machineIp": m.MachineIP, "sdk": m.SDK,
		"sdkVersion": m.SDKVersion, "properties": m.Properties,
	}
}

func hookBody(t *testing.T, from, to int) []byte {
	var recs []map[string]any
	for i := from; i < to; i++ {
		recs = append(recs, hookRecord(i))
	}
	return mustJSON(t, recs)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sign returns the Standard Webhooks headers for body.
func sign(t *testing.T, secret, msgID string, ts time.Time, body []byte) map[string]string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(secret[len("whsec_"):])
	if err != nil {
		t.Fatal(err)
	}
	sec := strconv.FormatInt(ts.Unix(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(msgID + "." + sec + "."))
	mac.Write(body)
	return map[string]string{
		"webhook-id": msgID, "webhook-timestamp": sec,
		"webhook-signature": "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)),
	}
}

// response is what a POST got.
type response struct {
	code   int
	header http.Header
	body   []byte
}

// json decodes the body as an object.
func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

// client makes one connection per request, so a reset affects only its request.
var client = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// send POSTs body with Content-Type: application/json and the given headers
// ("user" sets basic auth with an empty password).
func send(c *http.Client, url string, body []byte, headers map[string]string) (response, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return response{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		if k == "user" {
			req.SetBasicAuth(v, "")
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{code: resp.StatusCode, header: resp.Header, body: b}, err
}

// post is send that fails the test on transport errors.
func post(t *testing.T, url string, body []byte, headers map[string]string) response {
	t.Helper()
	r, err := send(client, url, body, headers)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return r
}

func start(t *testing.T, o destsim.Options) *destsim.Server {
	t.Helper()
	s, err := destsim.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// wantCode fails unless r has the status code.
func wantCode(t *testing.T, r response, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("status %d, want %d; body %s", r.code, code, r.body)
	}
}

// eventually polls cond for up to 10 seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}
