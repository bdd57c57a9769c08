package impression

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/uuid"
)

const sample = `{"tenant":"acme","environmentId":"env-prod-1","environmentName":"production",` +
	`"key":"user-1042","bucketingKey":"","split":"new_checkout","treatment":"on",` +
	`"label":"default rule","time":1767225600123,"splitVersionNumber":1767000000000,` +
	`"machineName":"web-7","machineIp":"10.1.2.3","sdk":"go","sdkVersion":"6.7.0",` +
	`"properties":"{\"plan\":\"pro\"}"}`

func TestParseSample(t *testing.T) {
	imp, err := Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	want := Impression{Tenant: "acme", EnvironmentID: "env-prod-1", EnvironmentName: "production",
		Key: "user-1042", Split: "new_checkout", Treatment: "on", Label: "default rule",
		Time: 1767225600123, SplitVersionNumber: 1767000000000, MachineName: "web-7",
		MachineIP: "10.1.2.3", SDK: "go", SDKVersion: "6.7.0", Properties: `{"plan":"pro"}`}
	// The id spelled out from CONTRACT §1, independently of ComputeID.
	ns := uuid.NewSHA1(uuid.NameSpaceURL, []byte("urn:outflow:impression"))
	want.ID = uuid.NewSHA1(ns, []byte(strings.Join([]string{"acme", "env-prod-1", "production",
		"user-1042", "", "new_checkout", "on", "default rule", "1767225600123", "1767000000000"}, "\x1f")))
	if imp != want {
		t.Errorf("Parse =\n%+v\nwant\n%+v", imp, want)
	}
	if want.ID.Version() != 5 {
		t.Errorf("id version = %d, want 5", want.ID.Version())
	}
}

func TestParseTolerates(t *testing.T) {
	base, _ := Parse([]byte(sample))
	for name, line := range map[string]string{
		"CRLF":           sample + "\r\n",
		"BOM":            "\xEF\xBB\xBF" + sample,
		"spaces":         "  " + sample + "\t",
		"unknown fields": strings.Replace(sample, `{"tenant"`, `{"extra":[1,{"a":null}],"tenant"`, 1),
	} {
		imp, err := Parse([]byte(line))
		if err != nil || imp != base {
			t.Errorf("%s: got %+v, %v", name, imp, err)
		}
	}
	// null counts as absent: an absent optional string is "", an absent integer 0.
	imp, err := Parse([]byte(`{"tenant":"t","environmentName":"e","key":"k","split":"s","treatment":"on","time":0,"label":null,"splitVersionNumber":null}`))
	if err != nil || imp.Label != "" || imp.SplitVersionNumber != 0 {
		t.Errorf("nulls: got %+v, %v", imp, err)
	}
}

func TestParseBlank(t *testing.T) {
	for _, line := range []string{"", "   ", "\r", "\xEF\xBB\xBF\r\n"} {
		if _, err := Parse([]byte(line)); !errors.Is(err, ErrBlank) {
			t.Errorf("Parse(%q) = %v, want ErrBlank", line, err)
		}
	}
}

func TestParseInvalid(t *testing.T) {
	set := func(field, value string) string {
		i := strings.Index(sample, `"`+field+`":`)
		j := i + len(field) + 3
		k := j
		for depth := 0; ; k++ { // end of the value: next top-level , or }
			c := sample[k]
			if c == '"' {
				k = k + 1 + strings.IndexByte(strings.ReplaceAll(sample[k+1:], `\"`, "xx"), '"')
				continue
			}
			if depth == 0 && (c == ',' || c == '}') {
				break
			}
		}
		return sample[:j] + value + sample[k:]
	}
	cases := map[string]struct{ line, reason string }{
		"not json":          {"hello", "not a JSON object"},
		"array":             {"[1,2]", "not a JSON object"},
		"truncated":         {sample[:50], "invalid JSON"},
		"trailing garbage":  {sample + " x", "invalid JSON"},
		"missing tenant":    {strings.Replace(sample, `"tenant":"acme",`, "", 1), `"tenant"`},
		"empty key":         {set("key", `""`), `"key"`},
		"null split":        {set("split", `null`), `"split"`},
		"missing time":      {strings.Replace(sample, `"time":1767225600123,`, "", 1), `"time"`},
		"null time":         {set("time", "null"), `"time"`},
		"negative time":     {set("time", "-5"), `"time" must be >= 0`},
		"year 10000":        {set("time", "253402300800000"), `"time" must be before the year 10000`},
		"int64 max":         {set("time", "9223372036854775807"), `"time" must be before the year 10000`},
		"fraction":          {set("time", "1767225600123.5"), `"time" must be an integer`},
		"exponent":          {set("time", "1e12"), `"time" must be an integer`},
		"quoted integer":    {set("splitVersionNumber", `"7"`), `"splitVersionNumber" must be an integer`},
		"huge integer":      {set("time", "99999999999999999999"), `"time" is out of range`},
		"number as string":  {set("treatment", "1"), `"treatment" must be a string`},
		"object as string":  {set("label", `{"a":1}`), `"label" must be a string`},
		"bad utf8":          {strings.Replace(sample, "web-7", "web-\xff", 1), "not valid UTF-8"},
		"bool tenant":       {set("tenant", "true"), `"tenant" must be a string`},
		"properties object": {set("properties", `{"plan":"pro"}`), `"properties" must be a string`},
		"too long":          {strings.Replace(sample, "web-7", strings.Repeat("w", MaxLineBytes), 1), "longer than the limit"},
		"deep nesting":      {`{"x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "}", "invalid JSON"},
	}
	for name, c := range cases {
		_, err := Parse([]byte(c.line))
		var ie *InvalidError
		if !errors.As(err, &ie) {
			t.Errorf("%s: Parse = %v, want *InvalidError", name, err)
			continue
		}
		if !strings.Contains(ie.Reason, c.reason) {
			t.Errorf("%s: reason %q does not mention %q", name, ie.Reason, c.reason)
		}
	}
}

func TestBinaryRoundTrip(t *testing.T) {
	imp, _ := Parse([]byte(sample))
	imp.Origin = 1<<40 | 17
	imp.ReceivedAt = 1767225700000
	b, _ := Marshal(imp)
	got, err := Unmarshal(b)
	if err != nil || got != imp {
		t.Fatalf("round trip: got %+v, %v", got, err)
	}
	for i := range b { // every truncation is refused, never a panic
		if _, err := Unmarshal(b[:i]); err == nil {
			t.Fatalf("Unmarshal of %d of %d bytes succeeded", i, len(b))
		}
	}
}

// wantFields are the fields CONTRACT §1 names, in its order.
var wantFields = []string{"tenant", "environmentId", "environmentName", "key", "bucketingKey",
	"split", "treatment", "label", "time", "splitVersionNumber", "machineName", "machineIp",
	"sdk", "sdkVersion", "properties"}

func TestParseFields(t *testing.T) {
	if strings.Join(Fields, ",") != strings.Join(wantFields, ",") {
		t.Errorf("Fields = %q\nwant     %q", Fields, wantFields)
	}
}

// TestParseKeys: a top-level key that names a field twice (after unescaping) or in
// another letter case makes the line invalid, because encoding/json and a reader that
// takes the first key would disagree on it. Other keys, and nested ones, are ignored.
func TestParseKeys(t *testing.T) {
	base, err := Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	front := func(kv string) string { return "{" + kv + "," + sample[1:] }
	back := func(kv string) string { return sample[:len(sample)-1] + "," + kv + "}" }
	cases := []struct {
		name, line string
		reason     string // "" for valid: the same impression as sample
	}{
		{"duplicate time, same value", back(`"time":1767225600123`), `duplicate field "time"`},
		{"duplicate time, first differs", front(`"time":1`), `duplicate field "time"`},
		{"duplicate tenant, different values", back(`"tenant":"globex"`), `duplicate field "tenant"`},
		{"duplicate optional field", back(`"machineIp":"10.9.9.9"`), `duplicate field "machineIp"`},
		{"duplicate null", back(`"label":null`), `duplicate field "label"`},
		{"duplicate integer", front(`"splitVersionNumber":1`), `duplicate field "splitVersionNumber"`},
		{"case variant Time", back(`"Time":5`), `field "Time" differs from "time" only in letter case`},
		{"case variant before", front(`"TENANT":"globex"`), `field "TENANT" differs from "tenant" only in letter case`},
		{"case variant alone", strings.Replace(sample, `"time":`, `"TIME":`, 1), `field "TIME" differs from "time" only in letter case`},
		{"case variant camel", back(`"environmentid":"x"`), `field "environmentid" differs from "environmentId" only in letter case`},
		{"escaped duplicate", back(`"ti\u006de":1`), `duplicate field "time"`},
		{"escaped first", front(`"\u0074\u0069\u006d\u0065":1`), `duplicate field "time"`},
		{"escaped solidus", back(`"t\/ime":1`), ""}, // unescapes to "t/ime": unknown
		{"escaped case variant", back(`"\u0054ime":1`), `field "Time" differs from "time" only in letter case`},
		{"long s folds to s", back(`"ſplit":"x"`), `differs from "split" only in letter case`},
		{"kelvin sign folds to k", back(`"\u212aey":"x"`), `differs from "key" only in letter case`},
		{"duplicate unknown key", back(`"extra":1,"extra":{"a":2}`), ""},
		{"case variants of an unknown key", back(`"extra":1,"EXTRA":2,"Extra":3`), ""},
		{"near misses", back(`"times":1,"tim":2,"time ":3," time":4,"tenant\u0000":5`), ""},
		{"nested duplicates", back(`"extra":{"time":1,"time":2,"TIME":3,"tenant":"x"}`), ""},
		{"nested in array", back(`"extra":[{"time":1},{"time":2},"\"time\":3",[{"Time":[]}]]`), ""},
		{"keys in strings", strings.Replace(sample, `"default rule"`, `"}\",\"time\":1,{"`, 1), ""},
		{"whitespace", " {\n\t\"x\" : [ 1 , { } ] ,\r\n" + sample[1:len(sample)-1] + " , \"y\" :\ttrue , \"z\" : -1.5e3 }", ""},
	}
	for _, c := range cases {
		imp, err := Parse([]byte(c.line))
		if c.reason == "" {
			want := base
			if c.name == "keys in strings" {
				want.Label = `}","time":1,{`
				want.ID = want.ComputeID()
			}
			if err != nil || imp != want {
				t.Errorf("%s: Parse(%s) = %+v, %v; want the sample impression", c.name, c.line, imp, err)
			}
			continue
		}
		var ie *InvalidError
		if !errors.As(err, &ie) {
			t.Errorf("%s: Parse(%s) = %v, want *InvalidError", c.name, c.line, err)
			continue
		}
		if !strings.Contains(ie.Reason, c.reason) {
			t.Errorf("%s: reason %q does not mention %q", c.name, ie.Reason, c.reason)
		}
	}
}

// BenchmarkParse measures a typical line, including the key check.
func BenchmarkParse(b *testing.B) {
	line := []byte(sample)
	b.ReportAllocs()
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		if _, err := Parse(line); err != nil {
			b.Fatal(err)
		}
	}
}

// Value gives each field's value as the line holds it.
func TestValue(t *testing.T) {
	line := `{"tenant":"t","environmentId":"ei","environmentName":"en","key":"k","bucketingKey":"bk","split":"s",` +
		`"treatment":"tr","label":"l","time":7,"splitVersionNumber":8,"machineName":"mn","machineIp":"mi","sdk":"sd",` +
		`"sdkVersion":"sv","properties":"p"}`
	imp, err := Parse([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	json.Unmarshal([]byte(line), &want)
	for f, name := range Fields {
		s, n, isInt := imp.Value(f)
		if got := any(s); isInt && float64(n) != want[name] || !isInt && got != want[name] {
			t.Errorf("Value(%d) = %q, %d, %v; the line's %s is %v", f, s, n, isInt, name, want[name])
		}
	}
}

// Digest is FNV-64a over the ids end to end, as batch names written earlier were made
// (one Write an id).
func TestDigest(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 40 {
		ids := make([]uuid.UUID, n)
		for i := range ids {
			for j := range ids[i] {
				ids[i][j] = byte(r.IntN(256))
			}
		}
		h := fnv.New64a()
		for _, id := range ids {
			h.Write(id[:])
		}
		if got, want := Digest(ids), fmt.Sprintf("%016x", h.Sum64()); got != want {
			t.Errorf("Digest of %d ids = %s, want %s", n, got, want)
		}
	}
}
