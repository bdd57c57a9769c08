package encode

import (
	"slices"
	"strconv"
	"unicode"
	"unicode/utf8"

	"github.com/outflow/outflow/internal/impression"
)

// Records are written by appending bytes, not through encoding/json and encoding/csv:
// a reflective encoder per record was a fifth of a backfill's CPU. The bytes are
// theirs exactly (json.Encoder with SetEscapeHTML(false), csv.Writer with its
// defaults), so objects and signatures do not change; FuzzEncodeAgrees holds the two
// to that.

// jsonKeys are what comes before each column's value in a JSON record.
var jsonKeys = func() []string {
	keys := make([]string, len(Columns))
	for i, c := range Columns {
		keys[i] = `,"` + c + `":`
	}
	keys[0] = keys[0][1:]
	return keys
}()

// appendNDJSON appends imp as an NDJSON line: the JSON object of Record, then '\n'.
func appendNDJSON(b []byte, imp *impression.Impression) []byte {
	b = AppendRecordFields(append(b, '{'), imp, false)
	return append(b, "}\n"...)
}

// AppendRecordFields appends the members of imp's Record as a JSON object holds them,
// without the braces: as encoding/json writes them, escaping <, > and & when
// escapeHTML (json.Marshal's way) or not (json.Encoder with SetEscapeHTML(false)).
func AppendRecordFields(b []byte, imp *impression.Impression, escapeHTML bool) []byte {
	for i, key := range jsonKeys {
		b = append(b, key...)
		if s, n, isInt := imp.Value(i + 1); isInt {
			b = strconv.AppendInt(b, n, 10)
		} else {
			b = appendJSONString(b, s, escapeHTML)
		}
	}
	return b
}

// propertyFields are the impression fields of Properties, in its order, as indexes
// into impression.Fields.
var propertyFields = func() []int {
	names := []string{"split", "treatment", "label", "environmentId", "environmentName", "splitVersionNumber",
		"bucketingKey", "sdk", "sdkVersion"}
	out := make([]int, len(names))
	for i, name := range names {
		out[i] = slices.Index(impression.Fields, name)
	}
	return out
}()

// AppendProperties appends the JSON object of imp's Properties, as json.Marshal
// writes it: the event properties of Amplitude and Segment events.
func AppendProperties(b []byte, imp *impression.Impression) []byte {
	for i, f := range propertyFields {
		b = append(b, "{,"[min(i, 1)], '"')
		b = append(b, impression.Fields[f]...)
		b = append(b, '"', ':')
		if s, n, isInt := imp.Value(f); isInt {
			b = strconv.AppendInt(b, n, 10)
		} else {
			b = appendJSONString(b, s, true)
		}
	}
	return append(b, '}')
}

// AppendJSONString appends s as json.Marshal writes a string.
func AppendJSONString(b []byte, s string) []byte { return appendJSONString(b, s, true) }

// appendCSV appends imp as a CSV row of Columns, then '\n'.
func appendCSV(b []byte, imp *impression.Impression) []byte {
	for i := range Columns {
		if i > 0 {
			b = append(b, ',')
		}
		if s, n, isInt := imp.Value(i + 1); isInt {
			b = strconv.AppendInt(b, n, 10)
		} else {
			b = appendCSVField(b, s)
		}
	}
	return append(b, '\n')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string, as encoding/json writes it: '"', '\\'
// and control characters escaped, invalid UTF-8 replaced by U+FFFD, U+2028 and U+2029
// escaped, and with escapeHTML, '<', '>' and '&' too.
func appendJSONString(b []byte, s string, escapeHTML bool) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && (!escapeHTML || c != '<' && c != '>' && c != '&') {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendCSVField appends s as encoding/csv writes a field: quoted when it holds a
// comma, a quote or a line end, starts with a space, or is `\.`; quotes doubled.
func appendCSVField(b []byte, s string) []byte {
	if !csvNeedsQuotes(s) {
		return append(b, s...)
	}
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' {
			b = append(b, '"')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

func csvNeedsQuotes(s string) bool {
	if s == "" {
		return false
	}
	if s == `\.` {
		return true
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\n' || c == '\r' || c == '"' || c == ',' {
			return true
		}
	}
	r, _ := utf8.DecodeRuneInString(s)
	return unicode.IsSpace(r)
}
