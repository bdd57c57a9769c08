package impression

import (
	"bytes"
	"errors"
	"fmt"
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

// skipSpace returns the index of the first byte at or after i that is not JSON
// whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// jsonInt is an int64 that must be written as a JSON integer literal.
type jsonInt struct {
	v   int64
	set bool
}

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
