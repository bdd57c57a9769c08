package destsim_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/destsim"
)

func TestAmplitudeAcceptsAndCountsDuplicates(t *testing.T) {
	s := start(t, destsim.Options{Kind: destsim.Amplitude, APIKey: testAPIKey})
	body := ampBody(t, testAPIKey, ampEvents(0, 3)...)
	r := post(t, s.URL()+"/batch", body, nil)
	wantCode(t, r, http.StatusOK)
	m := r.json(t)
	if m["code"] != 200.0 || m["events_ingested"] != 3.0 || m["payload_size_bytes"] != float64(len(body)) || m["server_upload_time"] == nil {
		t.Errorf("answer %s", r.body)
	}
	// A retry of part of the batch, and a copy within one request.
	wantCode(t, post(t, s.URL()+"/batch", ampBody(t, testAPIKey, ampEvent(1), ampEvent(3), ampEvent(3)), nil), http.StatusOK)

	st := s.Status()
	if st.Kind != destsim.Amplitude || st.Requests != 2 || st.Accepted != 2 || st.UniqueEvents != 4 || st.Duplicates != 2 {
		t.Errorf("status %+v", st)
	}
	if len(st.AcceptedAt) != 2 || st.FirstAccepted.IsZero() || st.LastAccepted.Before(st.FirstAccepted) {
		t.Errorf("accept times %v %v %v", st.AcceptedAt, st.FirstAccepted, st.LastAccepted)
	}
	evs := s.Events()
	if len(evs) != 4 || evs[id(1)].Count != 2 || evs[id(3)].Count != 2 || evs[id(0)].Count != 1 {
		t.Fatalf("events %v", evs)
	}
	var first map[string]any
	if err := json.Unmarshal(evs[id(0)].Body, &first); err != nil || first["insert_id"] != id(0) || first["user_id"] != "user-0" {
		t.Errorf("body %s: %v", evs[id(0)].Body, err)
	}
}

func TestAmplitudeAuth(t *testing.T) {
	s := start(t, destsim.Options{Kind: destsim.Amplitude, APIKey: testAPIKey})
	r := post(t, s.URL()+"/batch", ampBody(t, "wrong", ampEvent(0)), nil)
	wantCode(t, r, http.StatusBadRequest)
	if m := r.json(t); !strings.Contains(fmt.Sprint(m["error"]), "Invalid API key") {
		t.Errorf("answer %s", r.body)
	}
	r = post(t, s.URL()+"/batch", mustJSON(t, map[string]any{"events": ampEvents(0, 1)}), nil)
	wantCode(t, r, http.StatusBadRequest)
	if m := r.json(t); m["missing_field"] != "api_key" {
		t.Errorf("answer %s", r.body)
	}
	wantCode(t, post(t, s.URL()+"/v1/batch", ampBody(t, testAPIKey, ampEvent(0)), nil), http.StatusNotFound)
	if st := s.Status(); st.Requests != 3 || st.Rejected != 3 || st.UniqueEvents != 0 {
		t.Errorf("status %+v", st)
	}
}

func TestAmplitudeSchemaErrors(t *testing.T) {
	s := start(t, destsim.Options{Kind: destsim.Amplitude})
	evs := ampEvents(0, 6)
	delete(evs[1], "insert_id")
	evs[2]["time"] = 1.5
	evs[3]["event_properties"].(map[string]any)["splitVersionNumber"] = "42"
	delete(evs[4], "user_id")
	delete(evs[5]["event_properties"].(map[string]any), "sdk")
	r := post(t, s.URL()+"/batch", ampBody(t, "k", evs...), nil)
	wantCode(t, r, http.StatusBadRequest)
	var got struct {
		Code    int              `json:"code"`
		Error   string           `json:"error"`
		Invalid map[string][]int `json:"events_with_invalid_fields"`
		Missing map[string][]int `json:"events_with_missing_fields"`
	}
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	wantInvalid := map[string][]int{"time": {2}, "event_properties.splitVersionNumber": {3}}
	wantMissing := map[string][]int{"insert_id": {1}, "user_id": {4}, "event_properties.sdk": {5}}
	if got.Code != 400 || !reflect.DeepEqual(got.Invalid, wantInvalid) || !reflect.DeepEqual(got.Missing, wantMissing) {
		t.Errorf("answer %s", r.body)
	}
	if !strings.Contains(got.Error, "insert_id") {
		t.Errorf("error %q does not name the first problem", got.Error)
	}

	// Without options.min_id_length, Amplitude wants ids of at least 5 characters.
	ev := ampEvent(0)
	ev["user_id"] = "abc"
	r = post(t, s.URL()+"/batch", mustJSON(t, map[string]any{"api_key": "k", "events": []any{ev}}), nil)
	wantCode(t, r, http.StatusBadRequest)
	if !strings.Contains(string(r.body), `"events_with_invalid_fields":{"user_id":[0]}`) {
		t.Errorf("answer %s", r.body)
	}
	r = post(t, s.URL()+"/batch", []byte(`{"api_key":"k","events":[]}`), nil)
	wantCode(t, r, http.StatusBadRequest)
	r = post(t, s.URL()+"/batch", []byte(`not json`), nil)
	wantCode(t, r, http.StatusBadRequest)
	if st := s.Status(); st.Rejected != 4 || st.UniqueEvents != 0 {
		t.Errorf("status %+v", st)
	}
}

func TestSegmentAcceptsAndAuth(t *testing.T) {
	s := start(t, destsim.Options{Kind: destsim.Segment, WriteKey: testWrite})
	auth := map[string]string{"user": testWrite}
	r := post(t, s.URL()+"/v1/batch", segBody(t, 0, 5), auth)
	wantCode(t, r, http.StatusOK)
	if m := r.json(t); m["success"] != true {
		t.Errorf("answer %s", r.body)
	}
	wantCode(t, post(t, s.URL()+"/v1/batch", segBody(t, 3, 7), auth), http.StatusOK)
	wantCode(t, post(t, s.URL()+"/v1/batch", segBody(t, 0, 1), map[string]string{"user": "nope"}), http.StatusUnauthorized)
	wantCode(t, post(t, s.URL()+"/v1/batch", segBody(t, 0, 1), nil), http.StatusUnauthorized)

	st := s.Status()
	if st.Requests != 4 || st.Accepted != 2 || st.Rejected != 2 || st.UniqueEvents != 7 || st.Duplicates != 2 {
		t.Errorf("status %+v", st)
	}
	if e := s.Events()[id(4)]; e.Count != 2 || !strings.Contains(string(e.Body), `"messageId":"`+id(4)+`"`) {
		t.Errorf("event %+v", e)
	}
}

func TestSegmentSchemaErrors(t *testing.T) {
	s := start(t, destsim.Options{Kind: destsim.Segment})
	msgs := []map[string]any{segMessage(0), segMessage(1), segMessage(2), segMessage(3), segMessage(4)}
	msgs[0]["timestamp"] = "2026-01-01T00:00:00Z"          // no milliseconds
	msgs[1]["timestamp"] = "2026-01-01T01:00:00.000+01:00" // not UTC
	msgs[2]["type"] = "identify"
	msgs[3]["messageId"] = "not-a-uuid"
	msgs[4]["timestamp"] = "2026-13-01T00:00:00.000Z" // no such month
	r := post(t, s.URL()+"/v1/batch", mustJSON(t, map[string]any{"batch": msgs}), nil)
	wantCode(t, r, http.StatusBadRequest)
	var got struct {
		Success bool
		Message string
		Errors  []struct {
			Index   int
			Field   string
			Problem string
		}
	}
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	fields := map[int]string{}
	for _, e := range got.Errors {
		fields[e.Index] = e.Field
	}
	want := map[int]string{0: "timestamp", 1: "timestamp", 2: "type", 3: "messageId", 4: "timestamp"}
	if got.Success || !reflect.DeepEqual(fields, want) || !strings.Contains(got.Message, "timestamp") {
		t.Errorf("answer %s", r.body)
	}

	// One event over 32 KB.
	big := segMessage(0)
	big["properties"].(map[string]any)["padding"] = strings.Repeat("x", destsim.SegmentMaxEventBytes)
	r = post(t, s.URL()+"/v1/batch", mustJSON(t, map[string]any{"batch": []any{big, segMessage(1)}}), nil)
	wantCode(t, r, http.StatusBadRequest)
	if !strings.Contains(string(r.body), "32768") {
		t.Errorf("answer %s", r.body)
	}
	// A body over 500 KB.
	body := segBody(t, 0, 2000)
	if len(body) <= destsim.SegmentMaxBatchBytes {
		t.Fatalf("test body is only %d bytes", len(body))
	}
	r = post(t, s.URL()+"/v1/batch", body, nil)
	wantCode(t, r, http.StatusBadRequest)
	if !strings.Contains(string(r.body), "512000") {
		t.Errorf("answer %s", r.body)
	}
	if st := s.Status(); st.Rejected != 3 || st.UniqueEvents != 0 {
		t.Errorf("status %+v", st)
	}
}

func TestSegmentDropsEventsOverLimit(t *testing.T) {
	s := start(t, destsim.Options{Kind: destsim.Segment})
	// Gzipped, 2600 events fit the 500 KB a request may carry.
	r := post(t, s.URL()+"/v1/batch", gzipped(t, segBody(t, 0, 2600)), map[string]string{"Content-Encoding": "gzip"})
	wantCode(t, r, http.StatusOK)
	st := s.Status()
	if st.Accepted != 1 || st.UniqueEvents != 2500 || st.DroppedOverLimit != 100 {
		t.Errorf("status %+v", st)
	}
	evs := s.Events()
	if _, ok := evs[id(2499)]; !ok {
		t.Error("event 2499 was not accepted")
	}
	if _, ok := evs[id(2500)]; ok {
		t.Error("event 2500 was accepted")
	}
}

func TestWebhookSignedGzip(t *testing.T) {
	s := start(t, destsim.Options{Kind: destsim.Webhook, Secret: testSecret, Tenant: testTenant})
	body := hookBody(t, 0, 4)
	h := sign(t, testSecret, "msg_1", time.Now(), body)
	h["Content-Encoding"] = "gzip"
	r := post(t, s.URL()+"/hooks/impressions", gzipped(t, body), h)
	if r.code != http.StatusOK && r.code != http.StatusNoContent {
		t.Fatalf("status %d: %s", r.code, r.body)
	}
	// The same batch again (a retry, signed anew), uncompressed.
	r = post(t, s.URL()+"/hooks/impressions", body, sign(t, testSecret, "msg_1", time.Now(), body))
	if r.code/100 != 2 {
		t.Fatalf("status %d: %s", r.code, r.body)
	}
	st := s.Status()
	if st.Accepted != 2 || st.UniqueEvents != 4 || st.Duplicates != 4 || st.DuplicateBatches != 1 {
		t.Errorf("status %+v", st)
	}
	evs := s.Events()
	for i := range 4 {
		if evs[id(i)].Count != 2 {
			t.Errorf("impression %d (id %s): %+v", i, id(i), evs[id(i)])
		}
	}
	var rec map[string]any
	if err := json.Unmarshal(evs[id(2)].Body, &rec); err != nil || rec["key"] != "user-2" {
		t.Errorf("record %s: %v", evs[id(2)].Body, err)
	}
}

func TestWebhookRejects(t *testing.T) {
	s := start(t, destsim.Options{Kind: destsim.Webhook, Secret: testSecret, Tenant: testTenant})
	body := hookBody(t, 0, 2)
	now := time.Now()

	bad := sign(t, testSecret, "msg_1", now, body)
	bad["webhook-signature"] = "v1,AAAA" + bad["webhook-signature"][7:]
	r := post(t, s.URL(), body, bad)
	wantCode(t, r, http.StatusUnauthorized)
	if !strings.Contains(string(r.body), "signature") {
		t.Errorf("answer %s", r.body)
	}
	// Signed over other bytes than those sent.
	wantCode(t, post(t, s.URL(), body, sign(t, testSecret, "msg_1", now, hookBody(t, 0, 1))), http.StatusUnauthorized)
	// Signed with another secret.
	wantCode(t, post(t, s.URL(), body, sign(t, "whsec_AAAAAAAAAAAAAAAAAAAAAAAA", "msg_1", now, body)), http.StatusUnauthorized)

	noID := sign(t, testSecret, "msg_1", now, body)
	delete(noID, "webhook-id")
	r = post(t, s.URL(), body, noID)
	wantCode(t, r, http.StatusBadRequest)
	if !strings.Contains(string(r.body), "webhook-id") {
		t.Errorf("answer %s", r.body)
	}
	r = post(t, s.URL(), body, sign(t, testSecret, "msg_1", now.Add(-6*time.Minute), body))
	wantCode(t, r, http.StatusBadRequest)
	if !strings.Contains(string(r.body), "too old") {
		t.Errorf("answer %s", r.body)
	}
	wantCode(t, post(t, s.URL(), body, sign(t, testSecret, "msg_1", now.Add(6*time.Minute), body)), http.StatusBadRequest)

	// Schema: a tenant key, a string time, a missing key.
	recs := []map[string]any{hookRecord(0), hookRecord(1), hookRecord(2)}
	recs[0]["tenant"] = testTenant
	recs[1]["time"] = "1767225600001"
	delete(recs[2], "machineIp")
	b := mustJSON(t, recs)
	r = post(t, s.URL(), b, sign(t, testSecret, "msg_2", now, b))
	wantCode(t, r, http.StatusBadRequest)
	for _, want := range []string{`"field":"tenant"`, `"field":"time"`, `"field":"machineIp"`} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("answer %s lacks %s", r.body, want)
		}
	}
	// Not JSON content.
	ct := sign(t, testSecret, "msg_3", now, body)
	ct["Content-Type"] = "text/plain"
	wantCode(t, post(t, s.URL(), body, ct), http.StatusBadRequest)

	if st := s.Status(); st.Requests != 8 || st.Rejected != 8 || st.UniqueEvents != 0 {
		t.Errorf("status %+v", st)
	}
}

func TestRateLimitRetryAfterSeconds(t *testing.T) {
	s := start(t, destsim.Options{Kind: destsim.Segment, RateLimit: 0.2, Burst: 1})
	wantCode(t, post(t, s.URL()+"/v1/batch", segBody(t, 0, 1), nil), http.StatusOK)
	r := post(t, s.URL()+"/v1/batch", segBody(t, 1, 2), nil)
	wantCode(t, r, http.StatusTooManyRequests)
	if ra := r.header.Get("Retry-After"); ra != "5" && ra != "4" {
		t.Errorf("Retry-After %q, want about 5 seconds", ra)
	}
	if st := s.Status(); st.IgnoredRetryAfter != 0 {
		t.Errorf("status %+v", st)
	}
	// A client ignoring Retry-After.
	wantCode(t, post(t, s.URL()+"/v1/batch", segBody(t, 1, 2), nil), http.StatusTooManyRequests)
	st := s.Status()
	if st.Requests != 3 || st.Accepted != 1 || st.Throttled != 2 || st.IgnoredRetryAfter != 1 || st.UniqueEvents != 1 {
		t.Errorf("status %+v", st)
	}
}

func TestRateLimitRetryAfterHonoured(t *testing.T) {
	s := start(t, destsim.Options{Kind: destsim.Amplitude, RateLimit: 1})
	wantCode(t, post(t, s.URL()+"/batch", ampBody(t, "k", ampEvent(0)), nil), http.StatusOK)
	r := post(t, s.URL()+"/batch", ampBody(t, "k", ampEvent(1)), nil)
	wantCode(t, r, http.StatusTooManyRequests)
	if ra := r.header.Get("Retry-After"); ra != "1" {
		t.Fatalf("Retry-After %q, want 1", ra)
	}
	time.Sleep(time.Second)
	wantCode(t, post(t, s.URL()+"/batch", ampBody(t, "k", ampEvent(1)), nil), http.StatusOK)
	if st := s.Status(); st.Accepted != 2 || st.Throttled != 1 || st.IgnoredRetryAfter != 0 || st.UniqueEvents != 2 {
		t.Errorf("status %+v", st)
	}
}

func TestRateLimitRetryAfterDate(t *testing.T) {
	s := start(t, destsim.Options{Kind: destsim.Webhook, RateLimit: 0.2, RetryAfterDate: true})
	wantCode(t, post(t, s.URL(), hookBody(t, 0, 1), nil), http.StatusNoContent)
	before := time.Now()
	r := post(t, s.URL(), hookBody(t, 1, 2), nil)
	wantCode(t, r, http.StatusTooManyRequests)
	at, err := http.ParseTime(r.header.Get("Retry-After"))
	if err != nil {
		t.Fatalf("Retry-After %q: %v", r.header.Get("Retry-After"), err)
	}
	if d := at.Sub(before); d < 3*time.Second || d > 7*time.Second {
		t.Errorf("Retry-After %s is %s away, want about 5s", at, d)
	}
	wantCode(t, post(t, s.URL(), hookBody(t, 1, 2), nil), http.StatusTooManyRequests)
	if st := s.Status(); st.Throttled != 2 || st.IgnoredRetryAfter != 1 {
		t.Errorf("status %+v", st)
	}
}

func TestStatusAnswersThenFixed(t *testing.T) {
	for _, code := range []int{http.StatusBadRequest, http.StatusGone} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			o := destsim.Options{Kind: destsim.Webhook, Status: code}
			s := start(t, o)
			r := post(t, s.URL()+"/x", hookBody(t, 0, 2), nil)
			wantCode(t, r, code)
			if m := r.json(t); m["error"] == nil {
				t.Errorf("answer %s", r.body)
			}
			o.Status = 0
			s.Set(o)
			wantCode(t, post(t, s.URL()+"/x", hookBody(t, 0, 2), nil), http.StatusNoContent)
			if st := s.Status(); st.Requests != 2 || st.Rejected != 1 || st.Accepted != 1 || st.UniqueEvents != 2 {
				t.Errorf("status %+v", st)
			}
		})
	}
}

// Status 429 with a long RetryAfter, then Set back to normal: the destination keeps
// counting requests inside the announced pause.
func TestStatusRetryAfter(t *testing.T) {
	o := destsim.Options{Kind: destsim.Webhook, Status: http.StatusTooManyRequests, RetryAfter: time.Minute}
	s := start(t, o)
	r := post(t, s.URL(), hookBody(t, 0, 2), nil)
	wantCode(t, r, http.StatusTooManyRequests)
	if ra := r.header.Get("Retry-After"); ra != "60" {
		t.Errorf("Retry-After %q, want 60", ra)
	}
	o.Status = 0
	s.Set(o)
	wantCode(t, post(t, s.URL(), hookBody(t, 0, 2), nil), http.StatusNoContent)
	if st := s.Status(); st.Requests != 2 || st.Throttled != 1 || st.Accepted != 1 || st.IgnoredRetryAfter != 1 || st.UniqueEvents != 2 {
		t.Errorf("status %+v", st)
	}

	u := start(t, destsim.Options{Kind: destsim.Segment, Unavailable: 1, RetryAfter: 3 * time.Second})
	r = post(t, u.URL()+"/v1/batch", segBody(t, 0, 1), nil)
	wantCode(t, r, http.StatusServiceUnavailable)
	if ra := r.header.Get("Retry-After"); ra != "3" {
		t.Errorf("Retry-After %q, want 3", ra)
	}
}

// NoRetryAfter: Status's 503s and 429s and Unavailable's 503s carry no Retry-After,
// so no pause is announced and a request right after one is not counted as ignoring
// it.
func TestNoRetryAfter(t *testing.T) {
	for _, o := range []destsim.Options{
		{Kind: destsim.Webhook, Status: http.StatusServiceUnavailable, NoRetryAfter: true},
		{Kind: destsim.Webhook, Status: http.StatusTooManyRequests, NoRetryAfter: true, RetryAfter: time.Minute},
		{Kind: destsim.Webhook, Unavailable: 1, NoRetryAfter: true},
	} {
		t.Run(fmt.Sprintf("status %d unavailable %v", o.Status, o.Unavailable), func(t *testing.T) {
			s := start(t, o)
			want := o.Status
			if want == 0 {
				want = http.StatusServiceUnavailable
			}
			for range 2 {
				r := post(t, s.URL(), hookBody(t, 0, 1), nil)
				wantCode(t, r, want)
				if ra, ok := r.header["Retry-After"]; ok {
					t.Errorf("Retry-After %q, want none", ra)
				}
			}
			if st := s.Status(); st.Requests != 2 || st.Unavailable+st.Throttled != 2 || st.IgnoredRetryAfter != 0 {
				t.Errorf("status %+v", st)
			}
		})
	}
}

func TestFailRate(t *testing.T) {
	codes := func() []int {
		s := start(t, destsim.Options{Kind: destsim.Segment, FailRate: 0.5, Seed: 7})
		var got []int
		for i := range 40 {
			r := post(t, s.URL()+"/v1/batch", segBody(t, i, i+1), nil)
			if r.header.Get("Retry-After") != "" {
				t.Errorf("%d has Retry-After", r.code)
			}
			got = append(got, r.code)
		}
		st := s.Status()
		if st.Failed+st.Accepted != 40 || st.UniqueEvents != st.Accepted {
			t.Errorf("status %+v", st)
		}
		return got
	}
	a, b := codes(), codes()
	if !reflect.DeepEqual(a, b) {
		t.Errorf("same seed, different answers:\n%v\n%v", a, b)
	}
	seen := map[int]int{}
	for _, c := range a {
		seen[c]++
	}
	for _, c := range []int{200, 500, 502, 504} {
		if seen[c] == 0 {
			t.Errorf("no %d in %v", c, a)
		}
	}
	if len(seen) != 4 {
		t.Errorf("answers %v", seen)
	}
}

func TestUnavailable(t *testing.T) {
	s := start(t, destsim.Options{Kind: destsim.Amplitude, Unavailable: 1})
	r := post(t, s.URL()+"/batch", ampBody(t, "k", ampEvent(0)), nil)
	wantCode(t, r, http.StatusServiceUnavailable)
	if ra := r.header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After %q", ra)
	}
	wantCode(t, post(t, s.URL()+"/batch", ampBody(t, "k", ampEvent(0)), nil), http.StatusServiceUnavailable)
	if st := s.Status(); st.Unavailable != 2 || st.IgnoredRetryAfter != 1 || st.UniqueEvents != 0 {
		t.Errorf("status %+v", st)
	}
}

func TestReset(t *testing.T) {
	s := start(t, destsim.Options{Kind: destsim.Webhook, ResetRate: 1})
	if r, err := send(client, s.URL(), hookBody(t, 0, 1), nil); err == nil {
		t.Fatalf("got an answer %d %s, want a connection error", r.code, r.body)
	}
	if st := s.Status(); st.Requests != 1 || st.Resets != 1 || st.UniqueEvents != 0 {
		t.Errorf("status %+v", st)
	}
}

func TestSlow(t *testing.T) {
	const delay = 300 * time.Millisecond
	s := start(t, destsim.Options{Kind: destsim.Segment, SlowRate: 1, SlowDelay: delay})
	begin := time.Now()
	wantCode(t, post(t, s.URL()+"/v1/batch", segBody(t, 0, 1), nil), http.StatusOK)
	if d := time.Since(begin); d < delay {
		t.Errorf("answered after %s, want at least %s", d, delay)
	}
	// A client that gives up first: the request is still accepted, as by a real
	// server, so its retry makes a duplicate.
	impatient := &http.Client{Timeout: 50 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	if _, err := send(impatient, s.URL()+"/v1/batch", segBody(t, 1, 2), nil); err == nil {
		t.Fatal("the impatient client got an answer")
	}
	eventually(t, "the abandoned request to be accepted", func() bool { return s.Status().Accepted == 2 })
	if st := s.Status(); st.UniqueEvents != 2 {
		t.Errorf("status %+v", st)
	}
}

func TestMaxBodyBytes(t *testing.T) {
	s := start(t, destsim.Options{Kind: destsim.Webhook, MaxBodyBytes: 1000})
	small, big := hookBody(t, 0, 1), hookBody(t, 0, 10)
	wantCode(t, post(t, s.URL(), small, nil), http.StatusNoContent)
	// The limit applies to the decoded body.
	r := post(t, s.URL(), gzipped(t, big), map[string]string{"Content-Encoding": "gzip"})
	wantCode(t, r, http.StatusRequestEntityTooLarge)
	if st := s.Status(); st.Accepted != 1 || st.Rejected != 1 || st.UniqueEvents != 1 {
		t.Errorf("status %+v", st)
	}
}

func TestAmplitudeThrottledEvents(t *testing.T) {
	s := start(t, destsim.Options{Kind: destsim.Amplitude, ThrottleEvents: 0.3, Seed: 3})
	r := post(t, s.URL()+"/batch", ampBody(t, "k", ampEvents(0, 20)...), nil)
	wantCode(t, r, http.StatusTooManyRequests)
	if ra := r.header.Get("Retry-After"); ra != "" {
		t.Errorf("Retry-After %q on a partial 429", ra)
	}
	var got struct {
		Code      int            `json:"code"`
		Events    []int          `json:"throttled_events"`
		Users     map[string]int `json:"throttled_users"`
		Threshold int            `json:"eps_threshold"`
	}
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Code != 429 || len(got.Events) == 0 || len(got.Events) == 20 || len(got.Users) != len(got.Events) || got.Threshold <= 0 {
		t.Fatalf("answer %s", r.body)
	}
	held := map[int]bool{}
	for _, i := range got.Events {
		held[i] = true
		if got.Users[fmt.Sprintf("user-%d", i)] == 0 {
			t.Errorf("user of event %d not in throttled_users", i)
		}
	}
	// A 429 ingests nothing: the others must come again (CONTRACT §4).
	if evs := s.Events(); len(evs) != 0 {
		t.Errorf("%d events accepted by a 429", len(evs))
	}
	if st := s.Status(); st.Throttled != 1 || st.UniqueEvents != 0 {
		t.Errorf("status %+v", st)
	}

	// The same seed throttles the same events; with RetryAfterOnPartial the 429 says
	// when to come back.
	s2 := start(t, destsim.Options{Kind: destsim.Amplitude, ThrottleEvents: 0.3, Seed: 3, RetryAfterOnPartial: true})
	r2 := post(t, s2.URL()+"/batch", ampBody(t, "k", ampEvents(0, 20)...), nil)
	wantCode(t, r2, http.StatusTooManyRequests)
	if ra := r2.header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After %q", ra)
	}
	if !strings.Contains(string(r2.body), strings.ReplaceAll(fmt.Sprint(got.Events), " ", ",")) {
		t.Errorf("answer %s, want throttled_events %v", r2.body, got.Events)
	}
}

func TestStatusEndpoint(t *testing.T) {
	s := start(t, destsim.Options{Kind: destsim.Segment})
	wantCode(t, post(t, s.URL()+"/v1/batch", segBody(t, 0, 3), nil), http.StatusOK)
	wantCode(t, post(t, s.URL()+"/v1/batch", segBody(t, 0, 1), nil), http.StatusOK)
	for range 2 {
		resp, err := client.Get(s.URL() + "/status")
		if err != nil {
			t.Fatal(err)
		}
		var st destsim.Status
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("GET /status: %d %v", resp.StatusCode, err)
		}
		if st.Kind != destsim.Segment || st.Requests != 2 || st.Accepted != 2 || st.UniqueEvents != 3 || st.Duplicates != 1 || st.LastAccepted.IsZero() {
			t.Errorf("status %+v", st)
		}
	}
}

func TestConcurrentCounts(t *testing.T) {
	s := start(t, destsim.Options{Kind: destsim.Amplitude, FailRate: 0.2, Seed: 11})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 10 {
				n := g*10 + i
				send(client, s.URL()+"/batch", ampBody(t, "k", ampEvent(n), ampEvent(n%7)), nil)
			}
		})
	}
	wg.Wait()
	st := s.Status()
	if st.Requests != 80 || st.Accepted+st.Failed != 80 || st.Failed == 0 {
		t.Errorf("status %+v", st)
	}
	evs := s.Events()
	copies := 0
	for _, e := range evs {
		copies += e.Count
	}
	if copies != 2*st.Accepted || st.UniqueEvents+st.Duplicates != copies || len(evs) != st.UniqueEvents {
		t.Errorf("status %+v, %d copies of %d events", st, copies, len(evs))
	}
}

func TestInvalidOptions(t *testing.T) {
	for _, o := range []destsim.Options{
		{Kind: "mixpanel"},
		{Kind: destsim.Webhook, Secret: "not-whsec"},
		{Kind: destsim.Segment, FailRate: 2},
		{Kind: destsim.Segment, RateLimit: -1},
		{Kind: destsim.Segment, RetryAfter: -time.Second},
	} {
		if s, err := destsim.Start(o); err == nil {
			s.Close()
			t.Errorf("Start(%+v) succeeded", o)
		}
	}
}

// A request already arriving when a Retry-After is announced did not ignore it.
func TestRetryAfterInFlightNotIgnored(t *testing.T) {
	s := start(t, destsim.Options{Kind: destsim.Segment, RateLimit: 0.2, Burst: 1})
	wantCode(t, post(t, s.URL()+"/v1/batch", segBody(t, 0, 1), nil), http.StatusOK)

	// Send the headers of a request and wait until the server reads its body.
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := segBody(t, 1, 2)
	fmt.Fprintf(conn, "POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
		"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n", len(body))
	br := bufio.NewReader(conn)
	if line, err := br.ReadString('\n'); err != nil || !strings.Contains(line, "100") {
		t.Fatalf("want 100 Continue, got %q, %v", line, err)
	}
	br.ReadString('\n') // the blank line after it

	wantCode(t, post(t, s.URL()+"/v1/batch", segBody(t, 1, 2), nil), http.StatusTooManyRequests)
	conn.Write(body)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("in-flight request: %d", resp.StatusCode)
	}
	if st := s.Status(); st.Throttled != 2 || st.IgnoredRetryAfter != 0 {
		t.Errorf("status %+v", st)
	}
	wantCode(t, post(t, s.URL()+"/v1/batch", segBody(t, 1, 2), nil), http.StatusTooManyRequests)
	if st := s.Status(); st.IgnoredRetryAfter != 1 {
		t.Errorf("status %+v", st)
	}
}

// Within the grace, one request per announcement is forgiven: a client that waits for
// each answer (each a new announcement) is never counted.
func TestRetryAfterGraceOnePerAnnouncement(t *testing.T) {
	s := start(t, destsim.Options{Kind: destsim.Segment, RateLimit: 0.2, Burst: 1, RetryAfterGrace: time.Minute})
	wantCode(t, post(t, s.URL()+"/v1/batch", segBody(t, 0, 1), nil), http.StatusOK)
	wantCode(t, post(t, s.URL()+"/v1/batch", segBody(t, 1, 2), nil), http.StatusTooManyRequests) // announces
	wantCode(t, post(t, s.URL()+"/v1/batch", segBody(t, 1, 2), nil), http.StatusTooManyRequests) // forgiven, announces again
	if st := s.Status(); st.IgnoredRetryAfter != 0 {
		t.Fatalf("status %+v: want the first request after an announcement forgiven", st)
	}
	wantCode(t, post(t, s.URL()+"/v1/batch", segBody(t, 1, 2), nil), http.StatusTooManyRequests) // forgiven: second announcement
	wantCode(t, post(t, s.URL()+"/v1/batch", segBody(t, 1, 2), nil), http.StatusTooManyRequests) // forgiven: third
	if st := s.Status(); st.IgnoredRetryAfter != 0 {
		t.Fatalf("status %+v", st)
	}
}

// A webhook record may carry the impression's id; another id is refused.
func TestWebhookRecordID(t *testing.T) {
	s := start(t, destsim.Options{Kind: destsim.Webhook, Secret: testSecret, Tenant: testTenant})
	now := time.Now()
	rec := hookRecord(0)
	first, second := imp(0), imp(1)
	rec["id"] = first.ComputeID().String()
	b := mustJSON(t, []map[string]any{rec})
	wantCode(t, post(t, s.URL(), b, sign(t, testSecret, "msg_1", now, b)), http.StatusNoContent)
	rec["id"] = second.ComputeID().String()
	b = mustJSON(t, []map[string]any{rec})
	r := post(t, s.URL(), b, sign(t, testSecret, "msg_2", now, b))
	wantCode(t, r, http.StatusBadRequest)
	if !strings.Contains(string(r.body), `"field":"id"`) {
		t.Errorf("answer %s", r.body)
	}
}
