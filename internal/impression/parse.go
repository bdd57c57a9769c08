package impression

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"unicode/utf8"
)

// MaxLineBytes is the longest line Parse accepts; real impressions are well under 4 KiB.
const MaxLineBytes = 1 << 20

// ErrBlank reports a blank or whitespace-only line, which is skipped, not invalid.
var ErrBlank = errors.New("blank line")

// InvalidError explains why a line is not a valid impression. Its message is the
// reason written to the dead-letter store.
type InvalidError struct{ Reason string }

func (e *InvalidError) Error() string { return e.Reason }

func invalid(format string, args ...any) error {
	return &InvalidError{Reason: fmt.Sprintf(format, args...)}
}

var bom = []byte("\xEF\xBB\xBF")

// trimLine drops a BOM and surrounding white space (the CR of a CRLF line end too),
// and says whether what is left is blank or too long.
func trimLine(line []byte) ([]byte, error) {
	line = bytes.TrimPrefix(line, bom)
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return nil, ErrBlank
	}
	if len(line) > MaxLineBytes {
		return nil, invalid("line is longer than the limit of %d bytes", MaxLineBytes)
	}
	return line, nil
}

// Parse decodes one NDJSON line (CONTRACT §1) and computes the impression's id. It
// returns ErrBlank for lines to skip and an *InvalidError for lines to dead-letter.
// A line is invalid when its top-level object names a field twice or names one in
// another letter case, even through escapes ("ti\u006de"): readers would disagree on
// which value counts. Other unknown keys, and keys inside nested values, are ignored.
func Parse(line []byte) (Impression, error) {
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

// fields are the top-level keys Parse reads: the json tags of wire, in order.
var fields = func() []string {
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
	var seen uint64 // bit f: fields[f] seen
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
				return invalid("duplicate field %q", fields[f])
			}
			seen |= 1 << f
		} else {
			for _, name := range fields {
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
	for f, name := range fields {
		if string(key) == name {
			return f
		}
	}
	return -1
}

// skipSpace returns the index of the first byte at or after i that is not JSON
// whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
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

// jsonInt is an int64 that must be written as a JSON integer literal.
type jsonInt struct {
	v   int64
	set bool
}

// timeField and versionField are jsonInts that know their field name, because
// encoding/json does not say which field an Unmarshaler failed on.
type (
	timeField    struct{ jsonInt }
	versionField struct{ jsonInt }
)

func (n *timeField) UnmarshalJSON(b []byte) error    { return n.parse("time", b) }
func (n *versionField) UnmarshalJSON(b []byte) error { return n.parse("splitVersionNumber", b) }

func (n *jsonInt) parse(field string, b []byte) error {
	if string(b) == "null" {
		return nil
	}
	digits := b
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		digits = b[1:]
	}
	if len(digits) == 0 {
		return invalid("field %q must be an integer; got %s", field, describe(b))
	}
	var v int64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return invalid("field %q must be an integer literal; got %s", field, describe(b))
		}
		d := int64(c - '0')
		if v > (1<<63-1-d)/10 {
			return invalid("field %q is out of range for a 64-bit integer", field)
		}
		v = v*10 + d
	}
	if neg {
		v = -v
	}
	n.v, n.set = v, true
	return nil
}

// describe quotes a short sample of a JSON value for a reason message.
func describe(b []byte) string {
	const max = 40
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}

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
