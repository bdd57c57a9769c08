package impression

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"unicode/utf8"
)

// The reflective parser that Parse replaced, kept as the reference it is held to
// (FuzzParseAgrees): encoding/json with custom unmarshalers, a UTF-8 pass, and a scan
// of the top-level keys.

// referenceParse decodes one NDJSON line (CONTRACT §1) and computes the impression's id. It
// returns ErrBlank for lines to skip and an *InvalidError for lines to dead-letter.
// A line is invalid when its top-level object names a field twice or names one in
// another letter case, even through escapes ("ti\u006de"): readers would disagree on
// which value counts. Other unknown keys, and keys inside nested values, are ignored.
func referenceParse(line []byte) (Impression, error) {
	line, err := trimLine(line)
	if err != nil {
		return Impression{}, err
	}
	if !utf8.Valid(line) {
		return Impression{}, invalid("line is not valid UTF-8")
	}
	if line[0] != '{' {
		return Impression{}, invalid("line is not a JSON object")
	}
	var w wire
	if err := json.Unmarshal(line, &w); err != nil {
		return Impression{}, jsonReason(err)
	}
	// encoding/json keeps the last of duplicate keys and matches keys in any letter
	// case; a reader that takes the first "time" would see another impression. Such
	// lines are refused, so that every reader agrees on what a line says.
	if err := checkKeys(line); err != nil {
		return Impression{}, err
	}
	imp := Impression{
		Tenant: w.Tenant, EnvironmentID: w.EnvironmentID, EnvironmentName: w.EnvironmentName,
		Key: w.Key, BucketingKey: w.BucketingKey, Split: w.Split, Treatment: w.Treatment,
		Label: w.Label, Time: w.Time.v, SplitVersionNumber: w.SplitVersionNumber.v,
		MachineName: w.MachineName, MachineIP: w.MachineIP, SDK: w.SDK,
		SDKVersion: w.SDKVersion, Properties: w.Properties,
	}
	for _, f := range [...]struct {
		name, v string
	}{{"tenant", imp.Tenant}, {"environmentName", imp.EnvironmentName}, {"key", imp.Key},
		{"split", imp.Split}, {"treatment", imp.Treatment}} {
		if f.v == "" {
			return Impression{}, invalid("missing required field %q", f.name)
		}
	}
	if !w.Time.set {
		return Impression{}, invalid("missing required field %q", "time")
	}
	if imp.Time < 0 {
		return Impression{}, invalid("field %q must be >= 0; got %d", "time", imp.Time)
	}
	if imp.Time > MaxTime {
		return Impression{}, invalid("field %q must be before the year 10000 (at most %d); got %d", "time", int64(MaxTime), imp.Time)
	}
	imp.ID = imp.ComputeID()
	return imp, nil
}

// wire is the JSON shape of an input line. Strings decode null as absent; integers
// use jsonInt so a fraction, an exponent or a quoted number is refused.
type wire struct {
	Tenant             string       `json:"tenant"`
	EnvironmentID      string       `json:"environmentId"`
	EnvironmentName    string       `json:"environmentName"`
	Key                string       `json:"key"`
	BucketingKey       string       `json:"bucketingKey"`
	Split              string       `json:"split"`
	Treatment          string       `json:"treatment"`
	Label              string       `json:"label"`
	Time               timeField    `json:"time"`
	SplitVersionNumber versionField `json:"splitVersionNumber"`
	MachineName        string       `json:"machineName"`
	MachineIP          string       `json:"machineIp"`
	SDK                string       `json:"sdk"`
	SDKVersion         string       `json:"sdkVersion"`
	Properties         string       `json:"properties"`
}

// referenceFields are the top-level keys referenceParse reads: the json tags of wire, in order.
var referenceFields = func() []string {
	t := reflect.TypeFor[wire]()
	names := make([]string, t.NumField())
	for i := range names {
		names[i], _, _ = strings.Cut(t.Field(i).Tag.Get("json"), ",")
	}
	return names
}()

// checkKeys refuses an object whose top-level keys name a field of wire twice, or
// name one in another letter case (by the Unicode simple folding encoding/json
// matches keys with, so "ſplit" is a variant of "split"). Keys are compared after
// unescaping; other keys, and the keys of nested objects, are not checked. line must
// be a JSON object that json.Unmarshal accepted: the scan relies on it being well
// formed, and only stays in bounds otherwise.
func checkKeys(line []byte) error {
	var seen uint64 // bit f: referenceFields[f] seen
	i := 1          // after the opening brace
	for {
		i = skipSpace(line, i)
		if i >= len(line) || line[i] != '"' {
			return nil // the closing brace of an empty object
		}
		end := skipString(line, i)
		key := line[i+1 : max(i+1, end-1)]
		if bytes.IndexByte(key, '\\') >= 0 {
			var s string
			if err := json.Unmarshal(line[i:end], &s); err != nil {
				return invalid("invalid JSON: key %s: %v", describe(line[i:end]), err)
			}
			key = []byte(s)
		}
		if f := fieldIndex(key); f >= 0 {
			if seen&(1<<f) != 0 {
				return invalid("duplicate field %q", referenceFields[f])
			}
			seen |= 1 << f
		} else {
			for _, name := range referenceFields {
				if bytes.EqualFold(key, []byte(name)) {
					return invalid("field %q differs from %q only in letter case", key, name)
				}
			}
		}
		i = skipSpace(line, end) // at the colon
		i = skipValue(line, skipSpace(line, i+1))
		i = skipSpace(line, i)
		if i >= len(line) || line[i] != ',' {
			return nil // the closing brace
		}
		i++
	}
}

// fieldIndex returns the index of key in fields, or -1.
func fieldIndex(key []byte) int {
	for f, name := range referenceFields {
		if string(key) == name {
			return f
		}
	}
	return -1
}

// skipString returns the index just past the JSON string that opens at b[i].
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// skipValue returns the index just past the JSON value that starts at b[i]: a string,
// an object or array with everything nested in it, or a literal or number.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' &&
		b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
		i++
	}
	return i
}

// timeField and versionField are jsonInts that know their field name, because
// encoding/json does not say which field an Unmarshaler failed on.
type (
	timeField    struct{ jsonInt }
	versionField struct{ jsonInt }
)

func (n *timeField) UnmarshalJSON(b []byte) error    { return n.parse("time", b) }
func (n *versionField) UnmarshalJSON(b []byte) error { return n.parse("splitVersionNumber", b) }

// jsonReason turns an encoding/json error into a dead-letter reason that names the field.
func jsonReason(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return invalid("line is not a JSON object")
		}
		return invalid("field %q must be a string; got JSON %s", te.Field, te.Value)
	}
	var ie *InvalidError
	if errors.As(err, &ie) {
		return ie
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return invalid("invalid JSON at byte %d: %v", se.Offset, se)
	}
	return invalid("invalid JSON: %v", err)
}
