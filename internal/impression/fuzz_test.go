package impression

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzParse: whatever the line, Parse never panics, and what it accepts is a valid
// impression whose id and binary form are consistent.
func FuzzParse(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte(`{"tenant":"t","environmentName":"e","key":"k","split":"s","treatment":"on","time":0}`))
	f.Add([]byte("\xEF\xBB\xBF{}\r"))
	f.Add([]byte(`{"time":-0,"splitVersionNumber":-9223372036854775808}`))
	f.Add([]byte(`{"tenant":"t","environmentName":"e","key":"k","split":"s","treatment":"on","time":0,"ti\u006de":1}`))
	f.Add([]byte(`{"tenant":"t","environmentName":"e","key":"k","split":"s","treatment":"on","Time":0}`))
	f.Add([]byte(`{"x":{"time":1,"time":2},"x":[],"tenant":"t","environmentName":"e","key":"k","split":"s","treatment":"on","time":0}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		imp, err := Parse(line)
		problem, isObject := keyProblem(line)
		var ie *InvalidError
		switch {
		case errors.Is(err, ErrBlank):
			return
		case errors.As(err, &ie):
			if ie.Reason == "" {
				t.Fatal("invalid without a reason")
			}
			if keyReason := strings.HasPrefix(ie.Reason, "duplicate field") ||
				strings.HasSuffix(ie.Reason, "only in letter case"); keyReason && (!isObject || !problem) {
				t.Fatalf("reason %q, but the top-level keys are fine", ie.Reason)
			}
			return
		case err != nil:
			t.Fatalf("Parse returned %T %v; want nil, ErrBlank or *InvalidError", err, err)
		}
		if problem {
			t.Fatal("accepted a line whose top-level keys repeat a field or vary its letter case")
		}
		if imp.Tenant == "" || imp.EnvironmentName == "" || imp.Key == "" || imp.Split == "" || imp.Treatment == "" || imp.Time < 0 {
			t.Fatalf("accepted an impression without its required fields: %+v", imp)
		}
		if imp.ID != imp.ComputeID() {
			t.Fatal("id differs from ComputeID")
		}
		b, _ := Marshal(imp)
		back, err := Unmarshal(b)
		if err != nil || back != imp {
			t.Fatalf("binary round trip: %+v, %v", back, err)
		}
	})
}

// keyProblem reports whether line, a JSON object once trimmed as Parse trims it, has
// a top-level key that repeats one of wantFields or varies its letter case. It walks
// the keys with encoding/json's tokenizer, independently of checkKeys; isObject is
// false when line is not a well-formed object.
func keyProblem(line []byte) (problem, isObject bool) {
	dec := json.NewDecoder(bytes.NewReader(bytes.TrimSpace(bytes.TrimPrefix(line, bom))))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false, false
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return false, false
		}
		key, _ := tok.(string)
		for _, name := range wantFields {
			switch {
			case key == name:
				problem = problem || seen[name]
				seen[name] = true
			case strings.EqualFold(key, name):
				problem = true
			}
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return false, false
		}
	}
	return problem, true
}

// FuzzUnmarshal: corrupt binary forms are refused, never a panic.
func FuzzUnmarshal(f *testing.F) {
	imp, _ := Parse([]byte(sample))
	b, _ := Marshal(imp)
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		// Varints may arrive in longer forms than Marshal writes (a zero as 0x80 0x00);
		// what matters is that what was accepted survives a round trip unchanged.
		if imp, err := Unmarshal(b); err == nil {
			again, err := Marshal(imp)
			if err != nil {
				t.Fatalf("accepted an impression that does not marshal: %v", err)
			}
			if back, err := Unmarshal(again); err != nil || back != imp {
				t.Fatalf("accepted an impression that does not round-trip: %v", err)
			}
		}
	})
}
