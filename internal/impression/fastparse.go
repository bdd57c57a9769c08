package impression

import (
	"bytes"
	"crypto/sha1"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Parse decodes one NDJSON line (CONTRACT §1) and computes the impression's id. It
// returns ErrBlank for lines to skip and an *InvalidError for lines to dead-letter.
// A line is invalid when its top-level object names a field twice or names one in
// another letter case, even through escapes ("ti\u006de"): readers would disagree on
// which value counts. Other unknown keys, and keys inside nested values, are ignored.
//
// One hand-written pass over the line, without reflection, checks its syntax and
// UTF-8, matches the top-level keys, decodes the fields and checks the integer
// literals. Its results are those of the reflective encoding/json parser it replaced
// (reference_test.go), down to the reasons of invalid lines: FuzzParseAgrees holds
// the two to that. Errors come in this order: a blank line, a line over
// MaxLineBytes, invalid UTF-8 anywhere, a line that does not start with '{', the
// first JSON syntax error (as encoding/json words it), the first integer field that
// is not an integer literal, the first string field of another JSON type, the first
// repeated or case-varied top-level key, then the first missing required field and a
// negative time. Every key that encoding/json matches to a field (exactly or in
// another letter case) has its value checked against that field.
func Parse(line []byte) (Impression, error) {
	line, err := trimLine(line)
	if err != nil {
		return Impression{}, err
	}
	p := fastParser{line: line}
	if line[0] != '{' {
		return Impression{}, p.fail(invalid("line is not a JSON object"))
	}
	var arr [512]byte
	buf, err := p.object(arr[:0])
	if err != nil {
		return Impression{}, p.fail(err)
	}
	switch {
	case p.intErr != nil:
		return Impression{}, p.intErr
	case p.typeErr >= 0:
		return Impression{}, invalid("field %q must be a string; got JSON %s", Fields[p.typeErr], p.typeVal)
	case p.keyErr != nil:
		return Impression{}, p.keyErr
	}
	s := string(buf) // the one allocation: all string fields share it
	str := func(f int) string { return s[p.span[f][0]:p.span[f][1]] }
	imp := Impression{
		Tenant: str(fTenant), EnvironmentID: str(fEnvironmentID), EnvironmentName: str(fEnvironmentName),
		Key: str(fKey), BucketingKey: str(fBucketingKey), Split: str(fSplit), Treatment: str(fTreatment),
		Label: str(fLabel), Time: p.time.v, SplitVersionNumber: p.version.v,
		MachineName: str(fMachineName), MachineIP: str(fMachineIP), SDK: str(fSDK),
		SDKVersion: str(fSDKVersion), Properties: str(fProperties),
	}
	for _, f := range [...]int{fTenant, fEnvironmentName, fKey, fSplit, fTreatment} {
		if p.span[f][0] == p.span[f][1] {
			return Impression{}, invalid("missing required field %q", Fields[f])
		}
	}
	if !p.time.set {
		return Impression{}, invalid("missing required field %q", "time")
	}
	if imp.Time < 0 {
		return Impression{}, invalid("field %q must be >= 0; got %d", "time", imp.Time)
	}
	if imp.Time > MaxTime {
		return Impression{}, invalid("field %q must be before the year 10000 (at most %d); got %d", "time", int64(MaxTime), imp.Time)
	}
	imp.ID = fastID(&imp)
	return imp, nil
}

// fastField returns the index in Fields of the key spelled exactly so, or -1.
func fastField(key []byte) int {
	switch string(key) {
	case "tenant":
		return fTenant
	case "environmentId":
		return fEnvironmentID
	case "environmentName":
		return fEnvironmentName
	case "key":
		return fKey
	case "bucketingKey":
		return fBucketingKey
	case "split":
		return fSplit
	case "treatment":
		return fTreatment
	case "label":
		return fLabel
	case "time":
		return fTime
	case "splitVersionNumber":
		return fSplitVersionNumber
	case "machineName":
		return fMachineName
	case "machineIp":
		return fMachineIP
	case "sdk":
		return fSDK
	case "sdkVersion":
		return fSDKVersion
	case "properties":
		return fProperties
	}
	return -1
}

// fastParser is the state of one Parse call.
type fastParser struct {
	line    []byte
	span    [numFields][2]int // where in object's buf each string field's value is
	seen    uint64            // bit f: Fields[f] seen as an exact top-level key
	time    jsonInt           // the time field
	version jsonInt           // the splitVersionNumber field
	intErr  error             // the first refused integer literal
	typeErr int               // the field of the first value of a wrong type, or -1
	typeVal string            // that value's JSON type
	keyErr  error             // the first repeated or case-varied key
}

// maxDepth is encoding/json's limit on nesting; the top-level object is depth 1.
const maxDepth = 10000

// errUTF8 marks invalid UTF-8 met inside a string.
var errUTF8 = &InvalidError{Reason: "line is not valid UTF-8"}

// fail returns err unless the line is not valid UTF-8, which Parse reports first.
func (p *fastParser) fail(err error) error {
	if err == errUTF8 || !utf8.Valid(p.line) {
		return invalid("line is not valid UTF-8")
	}
	return err
}

// Contexts of syntax errors, worded as encoding/json's scanner words them.
type synCtx uint8

const (
	ctxValue synCtx = iota
	ctxKeyString
	ctxAfterKey
	ctxAfterPair
	ctxAfterElem
	ctxAfterTop
	ctxString
	ctxEscape
	ctxHex
	ctxNumber
	ctxDecimal
	ctxExponent
	ctxDepth
	ctxTrueR
	ctxTrueU
	ctxTrueE
	ctxFalseA
	ctxFalseL
	ctxFalseS
	ctxFalseE
	ctxNullU
	ctxNullL
)

var synText = [...]string{
	ctxValue:     "looking for beginning of value",
	ctxKeyString: "looking for beginning of object key string",
	ctxAfterKey:  "after object key",
	ctxAfterPair: "after object key:value pair",
	ctxAfterElem: "after array element",
	ctxAfterTop:  "after top-level value",
	ctxString:    "in string literal",
	ctxEscape:    "in string escape code",
	ctxHex:       "in \\u hexadecimal character escape",
	ctxNumber:    "in numeric literal",
	ctxDecimal:   "after decimal point in numeric literal",
	ctxExponent:  "in exponent of numeric literal",
	ctxDepth:     "exceeded max depth",
	ctxTrueR:     "in literal true (expecting 'r')",
	ctxTrueU:     "in literal true (expecting 'u')",
	ctxTrueE:     "in literal true (expecting 'e')",
	ctxFalseA:    "in literal false (expecting 'a')",
	ctxFalseL:    "in literal false (expecting 'l')",
	ctxFalseS:    "in literal false (expecting 's')",
	ctxFalseE:    "in literal false (expecting 'e')",
	ctxNullU:     "in literal null (expecting 'u')",
	ctxNullL:     "in literal null (expecting 'l')",
}

// syntax reports a syntax error at p.line[i] in context ctx, as json.Unmarshal
// would. At the end of the line the scanner is fed one more space: where a space
// is welcome the input just ended early, elsewhere the space is the culprit.
func (p *fastParser) syntax(i int, ctx synCtx) error {
	if i >= len(p.line) {
		if ctx <= ctxString {
			return invalid("invalid JSON at byte %d: unexpected end of JSON input", len(p.line))
		}
		return invalid("invalid JSON at byte %d: invalid character ' ' %s", len(p.line), synText[ctx])
	}
	return invalid("invalid JSON at byte %d: invalid character %s %s", i+1, quoteChar(p.line[i]), synText[ctx])
}

// quoteChar is encoding/json's: a byte quoted for a syntax error.
func quoteChar(c byte) string {
	switch c {
	case '\'':
		return `'\''`
	case '"':
		return `'"'`
	}
	s := strconv.Quote(string(rune(c)))
	return "'" + s[1:len(s)-1] + "'"
}

// object parses the top-level object that opens at p.line[0], and whatever follows it.
// It appends the values of string fields to buf and returns it; it returns a syntax
// error (or errUTF8), other problems are noted in p.
func (p *fastParser) object(buf []byte) ([]byte, error) {
	line := p.line
	p.typeErr = -1
	i := skipSpace(line, 1)
	if i < len(line) && line[i] == '}' {
		i++
	} else {
		for {
			// A key.
			if i >= len(line) || line[i] != '"' {
				return nil, p.syntax(i, ctxKeyString)
			}
			start := i
			end, esc, err := p.scanString(i)
			if err != nil {
				return nil, err
			}
			f := p.matchKey(line[start+1:end-1], esc)
			if i = skipSpace(line, end); i >= len(line) || line[i] != ':' {
				return nil, p.syntax(i, ctxAfterKey)
			}
			// Its value.
			i = skipSpace(line, i+1)
			if i >= len(line) {
				return nil, p.syntax(i, ctxValue)
			}
			start = i
			var kind string // the JSON type, for a string field that gets another
			switch c := line[i]; {
			case c == '"':
				if i, esc, err = p.scanString(i); err != nil {
					return nil, err
				}
				if f >= 0 && f != fTime && f != fSplitVersionNumber {
					a := len(buf)
					if esc {
						buf = appendUnquoted(buf, line[start+1:i-1])
					} else {
						buf = append(buf, line[start+1:i-1]...)
					}
					p.span[f] = [2]int{a, len(buf)}
				}
			case c == '{' || c == '[':
				if i, err = p.skipNested(i); err != nil {
					return nil, err
				}
				kind = "object"
				if c == '[' {
					kind = "array"
				}
			case c == '-' || '0' <= c && c <= '9':
				if i, err = p.scanNumber(i); err != nil {
					return nil, err
				}
				kind = "number"
			case c == 't':
				if i, err = p.scanLiteral(i, "true", ctxTrueR); err != nil {
					return nil, err
				}
				kind = "bool"
			case c == 'f':
				if i, err = p.scanLiteral(i, "false", ctxFalseA); err != nil {
					return nil, err
				}
				kind = "bool"
			case c == 'n':
				if i, err = p.scanLiteral(i, "null", ctxNullU); err != nil {
					return nil, err
				}
			default:
				return nil, p.syntax(i, ctxValue)
			}
			switch f {
			case -1:
			case fTime, fSplitVersionNumber:
				if p.intErr == nil {
					n := &p.time
					if f == fSplitVersionNumber {
						n = &p.version
					}
					p.intErr = n.parse(Fields[f], line[start:i])
				}
			default:
				if kind != "" && p.typeErr < 0 {
					p.typeErr, p.typeVal = f, kind
				}
			}
			// A comma and the next key, or the end of the object.
			if i = skipSpace(line, i); i < len(line) && line[i] == ',' {
				i = skipSpace(line, i+1)
				continue
			}
			if i >= len(line) || line[i] != '}' {
				return nil, p.syntax(i, ctxAfterPair)
			}
			i++
			break
		}
	}
	if i = skipSpace(line, i); i < len(line) {
		return nil, p.syntax(i, ctxAfterTop)
	}
	return buf, nil
}

// matchKey returns the field that encoding/json decodes the top-level key raw (a
// string's content, with escapes if esc) into, or -1. A repeated field, or a key that differs from a field only in letter case,
// is noted in p.keyErr.
func (p *fastParser) matchKey(raw []byte, esc bool) (f int) {
	key := raw
	if esc {
		var arr [64]byte
		key = appendUnquoted(arr[:0], raw)
	}
	if f = fastField(key); f >= 0 {
		if p.seen&(1<<f) != 0 && p.keyErr == nil {
			p.keyErr = invalid("duplicate field %q", Fields[f])
		}
		p.seen |= 1 << f
		return f
	}
	// encoding/json matches keys in any letter case; foldName equates what
	// bytes.EqualFold does.
	for f, name := range Fields {
		if len(key) >= len(name) && bytes.EqualFold(key, []byte(name)) {
			if p.keyErr == nil {
				p.keyErr = invalid("field %q differs from %q only in letter case", string(key), name)
			}
			return f
		}
	}
	return -1
}

// scanString returns the index just past the JSON string that opens at p.line[i],
// and whether it has escapes.
func (p *fastParser) scanString(i int) (end int, esc bool, err error) {
	line := p.line
	for i++; i < len(line); {
		c := line[i]
		if plain[c] {
			i++
			continue
		}
		switch {
		case c == '"':
			return i + 1, esc, nil
		case c == '\\':
			esc = true
			i++
			if i >= len(line) {
				return 0, false, p.syntax(i, ctxEscape)
			}
			switch line[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				for k := 1; k <= 4; k++ {
					if i+k >= len(line) || !isHex(line[i+k]) {
						return 0, false, p.syntax(i+k, ctxHex)
					}
				}
				i += 5
			default:
				return 0, false, p.syntax(i, ctxEscape)
			}
		case c < 0x20:
			return 0, false, p.syntax(i, ctxString)
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(line[i:])
			if r == utf8.RuneError && size == 1 {
				return 0, false, errUTF8
			}
			i += size
		}
	}
	return 0, false, p.syntax(i, ctxString)
}

// plain marks the bytes that stand for themselves in a JSON string: ASCII but for
// the quote, the backslash and control characters.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func hexVal(c byte) rune {
	switch {
	case c <= '9':
		return rune(c - '0')
	case c >= 'a':
		return rune(c - 'a' + 10)
	}
	return rune(c - 'A' + 10)
}

// getHex4 is encoding/json's getu4: the value of the \uXXXX that s starts with, or -1.
func getHex4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[2:6] {
		if !isHex(c) {
			return -1
		}
		r = r*16 + hexVal(c)
	}
	return r
}

// appendUnquoted appends the content s of a well-formed JSON string with escapes to
// b, unescaped as encoding/json does: a surrogate escape that does not pair up
// becomes U+FFFD.
func appendUnquoted(b, s []byte) []byte {
	for r := 0; r < len(s); {
		c := s[r]
		if c != '\\' {
			n := bytes.IndexByte(s[r:], '\\')
			if n < 0 {
				return append(b, s[r:]...)
			}
			b = append(b, s[r:r+n]...)
			r += n
			continue
		}
		r++
		switch c = s[r]; c {
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			rr := getHex4(s[r-1:])
			r += 5
			if utf16.IsSurrogate(rr) {
				if dec := utf16.DecodeRune(rr, getHex4(s[r:])); dec != utf8.RuneError {
					b = utf8.AppendRune(b, dec)
					r += 6
					continue
				}
				rr = utf8.RuneError
			}
			b = utf8.AppendRune(b, rr)
			continue
		default: // '"', '\\', '/'
			b = append(b, c)
		}
		r++
	}
	return b
}

// scanNumber returns the index just past the JSON number that starts at p.line[i].
func (p *fastParser) scanNumber(i int) (int, error) {
	line := p.line
	if line[i] == '-' {
		if i++; i >= len(line) || !isDigit(line[i]) {
			return 0, p.syntax(i, ctxNumber)
		}
	}
	if line[i] == '0' {
		i++
	} else {
		for i < len(line) && isDigit(line[i]) {
			i++
		}
	}
	if i < len(line) && line[i] == '.' {
		if i++; i >= len(line) || !isDigit(line[i]) {
			return 0, p.syntax(i, ctxDecimal)
		}
		for i < len(line) && isDigit(line[i]) {
			i++
		}
	}
	if i < len(line) && (line[i] == 'e' || line[i] == 'E') {
		if i++; i < len(line) && (line[i] == '+' || line[i] == '-') {
			i++
		}
		if i >= len(line) || !isDigit(line[i]) {
			return 0, p.syntax(i, ctxExponent)
		}
		for i < len(line) && isDigit(line[i]) {
			i++
		}
	}
	return i, nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// scanLiteral returns the index just past the literal lit (true, false or null) that
// starts at p.line[i]; ctx is the context of a mismatch at lit's second byte, the
// contexts of the later bytes follow it.
func (p *fastParser) scanLiteral(i int, lit string, ctx synCtx) (int, error) {
	for k := 1; k < len(lit); k++ {
		if i+k >= len(p.line) || p.line[i+k] != lit[k] {
			c := ctx + synCtx(k-1)
			if lit == "null" && k == 3 {
				c = ctxNullL // null's two l's share a context
			}
			return 0, p.syntax(i+k, c)
		}
	}
	return i + len(lit), nil
}

// skipNested returns the index just past the object or array that opens at p.line[i]
// as the value of a top-level key, checking its syntax and nesting depth.
func (p *fastParser) skipNested(i int) (int, error) {
	const (
		stValue   = iota // a value must follow
		stObjOpen        // after '{': a key or '}'
		stArrOpen        // after '[': a value or ']'
		stKey            // after ',' in an object: a key
		stAfter          // after a value
	)
	var objs [maxDepth/64 + 1]uint64 // bit d: the container at depth d is an object
	line := p.line
	depth := 1 // the top-level object
	var err error
	for st := stValue; ; {
		switch st {
		case stValue:
			if i = skipSpace(line, i); i >= len(line) {
				return 0, p.syntax(i, ctxValue)
			}
			switch c := line[i]; {
			case c == '{' || c == '[':
				if depth++; depth > maxDepth {
					return 0, p.syntax(i, ctxDepth)
				}
				i++
				if c == '{' {
					objs[depth/64] |= 1 << (depth % 64)
					st = stObjOpen
				} else {
					objs[depth/64] &^= 1 << (depth % 64)
					st = stArrOpen
				}
				continue
			case c == '"':
				i, _, err = p.scanString(i)
			case c == '-' || isDigit(c):
				i, err = p.scanNumber(i)
			case c == 't':
				i, err = p.scanLiteral(i, "true", ctxTrueR)
			case c == 'f':
				i, err = p.scanLiteral(i, "false", ctxFalseA)
			case c == 'n':
				i, err = p.scanLiteral(i, "null", ctxNullU)
			default:
				return 0, p.syntax(i, ctxValue)
			}
			if err != nil {
				return 0, err
			}
			st = stAfter
		case stObjOpen, stArrOpen:
			closer := byte('}')
			if st == stArrOpen {
				closer = ']'
			}
			if i = skipSpace(line, i); i < len(line) && line[i] == closer {
				i++
				depth--
				st = stAfter
			} else if st == stObjOpen {
				st = stKey
			} else {
				st = stValue
			}
		case stKey:
			if i = skipSpace(line, i); i >= len(line) || line[i] != '"' {
				return 0, p.syntax(i, ctxKeyString)
			}
			if i, _, err = p.scanString(i); err != nil {
				return 0, err
			}
			if i = skipSpace(line, i); i >= len(line) || line[i] != ':' {
				return 0, p.syntax(i, ctxAfterKey)
			}
			i++
			st = stValue
		case stAfter:
			if depth == 1 {
				return i, nil
			}
			obj := objs[depth/64]&(1<<(depth%64)) != 0
			i = skipSpace(line, i)
			switch {
			case i < len(line) && line[i] == ',':
				i++
				if obj {
					st = stKey
				} else {
					st = stValue
				}
			case i < len(line) && obj && line[i] == '}', i < len(line) && !obj && line[i] == ']':
				i++
				depth--
			case obj:
				return 0, p.syntax(i, ctxAfterPair)
			default:
				return 0, p.syntax(i, ctxAfterElem)
			}
		}
	}
}

// fastID is imp.ComputeID() without allocations: the same UUIDv5 of the same name.
func fastID(imp *Impression) uuid.UUID {
	var arr [512]byte
	sum := sha1.Sum(appendIDName(append(arr[:0], namespace[:]...), imp))
	var id uuid.UUID
	copy(id[:], sum[:])
	id[6] = (id[6] & 0x0f) | 5<<4 // version 5
	id[8] = (id[8] & 0x3f) | 0x80 // RFC 4122 variant
	return id
}
