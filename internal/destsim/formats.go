package destsim

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/outflow/outflow/internal/impression"
)

// maxProblems bounds the problems listed in one 400's body.
const maxProblems = 100

// problem is one schema violation of one event (Index -1: the whole request).
type problem struct {
	Index   int    `json:"index"`
	Field   string `json:"field"`
	Problem string `json:"problem"`
	missing bool
}

// problems collects violations.
type problems []problem

func (p *problems) add(i int, field, why string) {
	*p = append(*p, problem{Index: i, Field: field, Problem: why})
}

func (p *problems) miss(i int, field string) {
	*p = append(*p, problem{Index: i, Field: field, Problem: "missing", missing: true})
}

// listed is the problems for a 400's body, at most maxProblems.
func (p problems) listed() (list []problem, more int) {
	if len(p) > maxProblems {
		return p[:maxProblems], len(p) - maxProblems
	}
	return p, 0
}

// summary says what the first problem is and how many there are.
func (p problems) summary(what string) string {
	first := p[0]
	where := "request"
	if first.Index >= 0 {
		where = fmt.Sprintf("%s %d", what, first.Index)
	}
	msg := fmt.Sprintf("%s: %s: %s", where, first.Field, first.Problem)
	if len(p) > 1 {
		msg += fmt.Sprintf(" (and %d more problems)", len(p)-1)
	}
	return msg
}

// rejectProblems is the 400 for schema violations, in the destination's style.
func (s *Server) rejectProblems(p problems, what string) *reply {
	list, more := p.listed()
	extra := map[string]any{"errors": list}
	if more > 0 {
		extra["more_errors"] = more
	}
	if s.kind == Amplitude {
		invalid, missing := map[string][]int{}, map[string][]int{}
		for _, q := range p {
			if q.Index < 0 {
				continue
			}
			if q.missing {
				missing[q.Field] = append(missing[q.Field], q.Index)
			} else {
				invalid[q.Field] = append(invalid[q.Field], q.Index)
			}
		}
		if len(invalid) > 0 {
			extra["events_with_invalid_fields"] = invalid
		}
		if len(missing) > 0 {
			extra["events_with_missing_fields"] = missing
		}
		if first := p[0]; first.Index < 0 && first.missing {
			extra["missing_field"] = first.Field
		}
	}
	return s.errorReply(http.StatusBadRequest, p.summary(what), extra)
}

// rejectRequest is a 400 about the request as a whole.
func (s *Server) rejectRequest(field, why string) *reply {
	var p problems
	p.add(-1, field, why)
	return s.rejectProblems(p, "")
}

// authenticate checks the destination's credentials (and for Amplitude, that the
// body is JSON, since its key is in it).
func (s *Server) authenticate(r *http.Request, o Options, key, body []byte, received time.Time) *reply {
	switch s.kind {
	case Amplitude:
		if o.APIKey == "" {
			return nil
		}
		var v struct {
			APIKey *string `json:"api_key"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return s.rejectRequest("body", "not a JSON object with a string api_key: "+err.Error())
		}
		if v.APIKey == nil || *v.APIKey == "" {
			var p problems
			p.miss(-1, "api_key")
			return s.rejectProblems(p, "")
		}
		if *v.APIKey != o.APIKey {
			return s.errorReply(http.StatusBadRequest, "Invalid API key", map[string]any{"invalid_api_key": true})
		}
	case Segment:
		if o.WriteKey == "" {
			return nil
		}
		user, pass, ok := r.BasicAuth()
		switch {
		case !ok:
			return s.errorReply(http.StatusUnauthorized, "missing HTTP basic authentication (user: the write key)", nil)
		case user != o.WriteKey:
			return s.errorReply(http.StatusUnauthorized, "invalid write key", nil)
		case pass != "":
			return s.errorReply(http.StatusUnauthorized, "the basic-auth password must be empty", nil)
		}
	case Webhook:
		if key == nil {
			return nil
		}
		return s.verifySignature(r, key, body, received)
	}
	return nil
}

// verifySignature checks a Standard Webhooks signature: 400 for missing or bad
// headers and stale timestamps, 401 when no v1 signature matches.
func (s *Server) verifySignature(r *http.Request, key, body []byte, received time.Time) *reply {
	id, ts, sigs := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), r.Header.Get("webhook-signature")
	for _, h := range []struct{ name, v string }{{"webhook-id", id}, {"webhook-timestamp", ts}, {"webhook-signature", sigs}} {
		if strings.TrimSpace(h.v) == "" {
			return s.rejectRequest(h.name, "missing header")
		}
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return s.rejectRequest("webhook-timestamp", fmt.Sprintf("%q is not Unix seconds", ts))
	}
	switch age := received.Sub(time.Unix(secs, 0)); {
	case age > WebhookTolerance:
		return s.rejectRequest("webhook-timestamp", fmt.Sprintf("too old: %s ago (tolerance %s)", age.Round(time.Second), WebhookTolerance))
	case -age > WebhookTolerance:
		return s.rejectRequest("webhook-timestamp", fmt.Sprintf("too new: %s ahead (tolerance %s)", (-age).Round(time.Second), WebhookTolerance))
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	versions := 0
	for _, sig := range strings.Fields(sigs) {
		ver, val, _ := strings.Cut(sig, ",")
		if ver != "v1" {
			continue
		}
		versions++
		if got, err := base64.StdEncoding.DecodeString(val); err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	if versions == 0 {
		return s.rejectRequest("webhook-signature", `no "v1,<base64>" signature`)
	}
	return s.errorReply(http.StatusUnauthorized, "webhook-signature: no v1 signature matches HMAC-SHA256(key, webhook-id.webhook-timestamp.body)", nil)
}

// checkJSONContentType refuses a request that is not Content-Type: application/json.
func (s *Server) checkJSONContentType(r *http.Request) *reply {
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return s.rejectRequest("Content-Type", fmt.Sprintf("must be application/json; got %q", ct))
	}
	return nil
}

// validateAmplitude checks a Batch API body.
func (s *Server) validateAmplitude(r *http.Request, body []byte) (*batch, *reply) {
	if rep := s.checkJSONContentType(r); rep != nil {
		return nil, rep
	}
	top, ok := object(body)
	if !ok {
		return nil, s.rejectRequest("body", "not a JSON object")
	}
	var p problems
	if _, ok := top["api_key"]; !ok {
		p.miss(-1, "api_key")
	} else if _, ok := str(top["api_key"]); !ok {
		p.add(-1, "api_key", "not a string")
	}
	minIDLength := int64(5) // Amplitude's default
	if raw, ok := top["options"]; ok {
		opts, ok := object(raw)
		if !ok {
			p.add(-1, "options", "not an object")
		} else if raw, ok := opts["min_id_length"]; ok {
			if n, ok := integer(raw); ok && n >= 1 {
				minIDLength = n
			} else {
				p.add(-1, "options.min_id_length", "not an integer >= 1")
			}
		}
	}
	events, rep := s.array(top, "events")
	if rep != nil {
		return nil, rep
	}
	b := &batch{items: make([]item, 0, len(events))}
	for i, raw := range events {
		ev, ok := object(raw)
		if !ok {
			p.add(i, "event", "not a JSON object")
			continue
		}
		it := item{raw: raw}
		it.id = uuidField(&p, i, ev, "insert_id")
		idProblem := false
		for _, name := range []string{"user_id", "device_id"} {
			raw, ok := ev[name]
			if !ok || string(bytes.TrimSpace(raw)) == "null" {
				continue
			}
			v, ok := str(raw)
			switch {
			case !ok:
				p.add(i, name, "not a string")
				idProblem = true
			case v == "":
			case int64(len(v)) < minIDLength:
				p.add(i, name, fmt.Sprintf("%q is shorter than min_id_length %d", v, minIDLength))
				idProblem = true
			case it.user == "":
				it.user, it.device = v, name == "device_id"
			}
		}
		if it.user == "" && !idProblem {
			p.add(i, "user_id", "missing: user_id or device_id must be a non-empty string")
			p[len(p)-1].missing = true
		}
		nonEmptyString(&p, i, ev, "event_type")
		if raw, ok := ev["time"]; !ok {
			p.miss(i, "time")
		} else if _, ok := integer(raw); !ok {
			p.add(i, "time", "not an integer (Unix milliseconds)")
		}
		checkProperties(&p, i, ev, "event_properties")
		b.items = append(b.items, it)
	}
	if len(p) > 0 {
		return nil, s.rejectProblems(p, "event")
	}
	return b, nil
}

// validateSegment checks a batch body; wire is the size of the request body as
// sent (gzipped or not), which SegmentMaxBatchBytes bounds.
func (s *Server) validateSegment(r *http.Request, body []byte, wire int) (*batch, *reply) {
	if rep := s.checkJSONContentType(r); rep != nil {
		return nil, rep
	}
	if wire > SegmentMaxBatchBytes {
		return nil, s.rejectRequest("body", fmt.Sprintf("request body is %d bytes; Segment accepts at most %d per batch", wire, SegmentMaxBatchBytes))
	}
	top, ok := object(body)
	if !ok {
		return nil, s.rejectRequest("body", "not a JSON object")
	}
	msgs, rep := s.array(top, "batch")
	if rep != nil {
		return nil, rep
	}
	var p problems
	b := &batch{items: make([]item, 0, min(len(msgs), SegmentMaxEvents))}
	for i, raw := range msgs {
		if len(raw) > SegmentMaxEventBytes {
			p.add(i, "message", fmt.Sprintf("%d bytes; Segment accepts at most %d per call", len(raw), SegmentMaxEventBytes))
		}
		m, ok := object(raw)
		if !ok {
			p.add(i, "message", "not a JSON object")
			continue
		}
		if raw, ok := m["type"]; !ok {
			p.miss(i, "type")
		} else if v, _ := str(raw); v != "track" {
			p.add(i, "type", fmt.Sprintf(`must be "track"; got %s`, short(raw)))
		}
		it := item{raw: raw, id: uuidField(&p, i, m, "messageId")}
		nonEmptyString(&p, i, m, "userId")
		nonEmptyString(&p, i, m, "event")
		if raw, ok := m["timestamp"]; !ok {
			p.miss(i, "timestamp")
		} else if v, ok := str(raw); !ok || !utcMillis.MatchString(v) {
			p.add(i, "timestamp", fmt.Sprintf("must be RFC 3339 in UTC with milliseconds (2006-01-02T15:04:05.000Z); got %s", short(raw)))
		} else if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
			p.add(i, "timestamp", "not a valid time: "+err.Error())
		}
		checkProperties(&p, i, m, "properties")
		if i < SegmentMaxEvents {
			b.items = append(b.items, it)
		} else {
			b.dropped++
		}
	}
	if len(p) > 0 {
		return nil, s.rejectProblems(p, "message")
	}
	return b, nil
}

var utcMillis = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)

// Webhook record keys and their types.
var (
	recordStrings = []string{"environmentId", "environmentName", "key", "bucketingKey", "split",
		"treatment", "label", "machineName", "machineIp", "sdk", "sdkVersion", "properties"}
	recordIntegers = []string{"time", "splitVersionNumber"}
	// recordRequired must be non-empty, as in an input impression.
	recordRequired = map[string]bool{"environmentName": true, "key": true, "split": true, "treatment": true}
)

// validateWebhook checks a webhook body: a JSON array of records.
func (s *Server) validateWebhook(r *http.Request, body []byte, tenant string) (*batch, *reply) {
	if rep := s.checkJSONContentType(r); rep != nil {
		return nil, rep
	}
	var records []json.RawMessage
	if t := bytes.TrimSpace(body); len(t) == 0 || t[0] != '[' || json.Unmarshal(t, &records) != nil {
		return nil, s.rejectRequest("body", "not a JSON array of records")
	}
	if len(records) == 0 {
		return nil, s.rejectRequest("body", "empty array")
	}
	var p problems
	b := &batch{items: make([]item, 0, len(records)), webhookID: r.Header.Get("webhook-id")}
	for i, raw := range records {
		rec, ok := object(raw)
		if !ok {
			p.add(i, "record", "not a JSON object")
			continue
		}
		known := map[string]bool{}
		strs := map[string]string{}
		for _, k := range recordStrings {
			known[k] = true
			raw, ok := rec[k]
			if !ok {
				p.miss(i, k)
				continue
			}
			v, ok := str(raw)
			switch {
			case !ok:
				p.add(i, k, "not a string")
			case v == "" && recordRequired[k]:
				p.add(i, k, "empty")
			}
			strs[k] = v
		}
		ints := map[string]int64{}
		for _, k := range recordIntegers {
			known[k] = true
			raw, ok := rec[k]
			if !ok {
				p.miss(i, k)
				continue
			}
			v, ok := integer(raw)
			switch {
			case !ok:
				p.add(i, k, "not an integer")
			case k == "time" && v < 0:
				p.add(i, k, "negative")
			}
			ints[k] = v
		}
		var extra []string
		for k := range rec {
			if !known[k] && k != "id" {
				extra = append(extra, k)
			}
		}
		sort.Strings(extra)
		for _, k := range extra {
			if k == "tenant" {
				p.add(i, k, "must not be sent: records carry no tenant")
			} else {
				p.add(i, k, "unexpected key")
			}
		}
		imp := impression.Impression{
			Tenant: tenant, EnvironmentID: strs["environmentId"], EnvironmentName: strs["environmentName"],
			Key: strs["key"], BucketingKey: strs["bucketingKey"], Split: strs["split"],
			Treatment: strs["treatment"], Label: strs["label"], Time: ints["time"],
			SplitVersionNumber: ints["splitVersionNumber"],
		}
		id := imp.ComputeID().String()
		// An optional "id" (CONTRACT §4) must be the impression's.
		if rawID, ok := rec["id"]; ok {
			var got string
			if json.Unmarshal(rawID, &got) != nil || got != id {
				p.add(i, "id", "not the impression's id "+id)
			}
		}
		b.items = append(b.items, item{id: id, raw: raw})
	}
	if len(p) > 0 {
		return nil, s.rejectProblems(p, "record")
	}
	return b, nil
}

// array reads a required, non-empty array field of the request.
func (s *Server) array(top map[string]json.RawMessage, name string) ([]json.RawMessage, *reply) {
	raw, ok := top[name]
	if !ok {
		var p problems
		p.miss(-1, name)
		return nil, s.rejectProblems(p, "")
	}
	var a []json.RawMessage
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '[' || json.Unmarshal(t, &a) != nil {
		return nil, s.rejectRequest(name, "not an array")
	}
	if len(a) == 0 {
		return nil, s.rejectRequest(name, "empty array")
	}
	return a, nil
}

// Property keys of Amplitude's event_properties and Segment's properties.
var (
	propStrings  = []string{"split", "treatment", "label", "environmentId", "environmentName", "bucketingKey", "sdk", "sdkVersion"}
	propRequired = map[string]bool{"split": true, "treatment": true, "environmentName": true}
)

// checkProperties checks the impression properties object m[name].
func checkProperties(p *problems, i int, m map[string]json.RawMessage, name string) {
	raw, ok := m[name]
	if !ok {
		p.miss(i, name)
		return
	}
	props, ok := object(raw)
	if !ok {
		p.add(i, name, "not an object")
		return
	}
	for _, k := range propStrings {
		raw, ok := props[k]
		if !ok {
			p.miss(i, name+"."+k)
			continue
		}
		v, ok := str(raw)
		switch {
		case !ok:
			p.add(i, name+"."+k, "not a string")
		case v == "" && propRequired[k]:
			p.add(i, name+"."+k, "empty")
		}
	}
	if raw, ok := props["splitVersionNumber"]; !ok {
		p.miss(i, name+".splitVersionNumber")
	} else if _, ok := integer(raw); !ok {
		p.add(i, name+".splitVersionNumber", fmt.Sprintf("not an integer number; got %s", short(raw)))
	}
}

// uuidField reads a required UUID string field and returns its canonical form.
func uuidField(p *problems, i int, m map[string]json.RawMessage, name string) string {
	raw, ok := m[name]
	if !ok {
		p.miss(i, name)
		return ""
	}
	v, ok := str(raw)
	if !ok {
		p.add(i, name, "not a string")
		return ""
	}
	id, err := uuid.Parse(v)
	if err != nil || len(v) != 36 {
		p.add(i, name, fmt.Sprintf("not a UUID (the impression id); got %s", short(raw)))
		return ""
	}
	return id.String()
}

// nonEmptyString checks a required non-empty string field.
func nonEmptyString(p *problems, i int, m map[string]json.RawMessage, name string) {
	raw, ok := m[name]
	if !ok {
		p.miss(i, name)
		return
	}
	if v, ok := str(raw); !ok {
		p.add(i, name, "not a string")
	} else if v == "" {
		p.add(i, name, "empty")
	}
}

// object decodes a JSON object.
func object(raw []byte) (map[string]json.RawMessage, bool) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || t[0] != '{' {
		return nil, false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(t, &m) != nil {
		return nil, false
	}
	return m, true
}

// str decodes a JSON string (not null).
func str(raw json.RawMessage) (string, bool) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || t[0] != '"' {
		return "", false
	}
	var v string
	if json.Unmarshal(t, &v) != nil {
		return "", false
	}
	return v, true
}

// integer decodes a JSON integer literal (no fraction, exponent or quotes).
func integer(raw json.RawMessage) (int64, bool) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return 0, false
	}
	for i, c := range t {
		if !(c >= '0' && c <= '9' || c == '-' && i == 0) {
			return 0, false
		}
	}
	v, err := strconv.ParseInt(string(t), 10, 64)
	return v, err == nil
}

// short quotes a JSON value for a problem, shortened.
func short(raw json.RawMessage) string {
	const max = 60
	if len(raw) > max {
		return string(raw[:max]) + "…"
	}
	return string(raw)
}
