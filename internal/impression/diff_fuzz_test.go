package impression

import (
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// agree fails t unless referenceParse and Parse say the same of line: both ErrBlank, both
// an *InvalidError with the same reason, or both the same impression.
func agree(t *testing.T, line []byte) {
	t.Helper()
	in := append([]byte(nil), line...)
	want, werr := referenceParse(line)
	got, gerr := Parse(line)
	if !bytes.Equal(line, in) {
		t.Fatalf("a parser changed its input %s", short(in))
	}
	var wie, gie *InvalidError
	switch {
	case errors.Is(werr, ErrBlank) || errors.Is(gerr, ErrBlank):
		if werr != gerr {
			t.Fatalf("line %s:\nreference %v\nParse     %v", short(line), werr, gerr)
		}
	case errors.As(werr, &wie):
		if !errors.As(gerr, &gie) || gie.Reason != wie.Reason {
			t.Fatalf("line %s:\nreference invalid: %s\nParse     %+v, %v", short(line), wie.Reason, got, gerr)
		}
	case werr != nil:
		t.Fatalf("line %s: referenceParse returned %T %v", short(line), werr, werr)
	case gerr != nil:
		t.Fatalf("line %s:\nreference %+v\nParse     %v", short(line), want, gerr)
	case got != want:
		t.Fatalf("line %s:\nreference %+v\nParse     %+v", short(line), want, got)
	case got.ID != got.ComputeID():
		t.Fatalf("line %s: Parse's id differs from ComputeID", short(line))
	}
	if gerr != nil && got != (Impression{}) {
		t.Fatalf("line %s: Parse returned %+v with error %v", short(line), got, gerr)
	}
}

// short quotes line for a failure message, cut to a readable length.
func short(line []byte) string {
	if len(line) > 300 {
		return strconv.Quote(string(line[:150])) + fmt.Sprintf("…(%d bytes)…", len(line)-300) + strconv.Quote(string(line[len(line)-150:]))
	}
	return strconv.Quote(string(line))
}

// parseSeeds are FuzzParse's seeds, reused rather than copied: the entries of its
// corpus in testdata, and every string literal of fuzz_test.go and parse_test.go (the
// lines of f.Add, the test tables, the key-value pairs they splice into sample, both
// alone and spliced into sample at its front and its back).
func parseSeeds(t testing.TB) [][]byte {
	seeds := [][]byte{[]byte(sample)}
	entries, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzParse", "*"))
	for _, name := range entries {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		body, ok := strings.CutPrefix(string(b), "go test fuzz v1\n[]byte(")
		body = strings.TrimSpace(body)
		if !ok || !strings.HasSuffix(body, ")") {
			t.Fatalf("%s: not a []byte corpus entry", name)
		}
		s, err := strconv.Unquote(strings.TrimSuffix(body, ")"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		seeds = append(seeds, []byte(s))
	}
	fset := token.NewFileSet()
	for _, name := range []string{"fuzz_test.go", "parse_test.go"} {
		file, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil || s == "" {
				return true
			}
			seeds = append(seeds, []byte(s))
			if strings.HasPrefix(s, `"`) && strings.Contains(s, `:`) { // a key-value pair
				seeds = append(seeds, []byte("{"+s+","+sample[1:]),
					[]byte(sample[:len(sample)-1]+","+s+"}"))
			}
			return true
		})
	}
	return seeds
}

// trickyLines are lines where a hand-written parser may well part from encoding/json.
var trickyLines = func() []string {
	const req = `"tenant":"t","environmentName":"e","key":"k","split":"s","treatment":"on","time":0`
	obj := func(kv string) string { return "{" + req + "," + kv + "}" }
	lines := []string{
		"", " ", "\r\n", "\xEF\xBB\xBF", "\xEF\xBB\xBF\xEF\xBB\xBF{}", " \xEF\xBB\xBF{}", "\u00a0" + sample + "\u2028",
		"\v" + sample, sample + "\f", sample + "\x85", sample + "\u0085", sample + "\xc2", sample + " \xff",
		"{", "{}", "{ }", "{\"", "{\"a", `{"a"`, `{"a":`, `{"a":1`, `{"a":1,`, `{"a":1,}`, `{,}`, `{"a" 1}`,
		`{"a":1 "b":2}`, `{"a":1}}`, `{"a":1}{}`, `{"a":1} x`, `{"a":1}` + "\t\n x", `{"a":[1,]}`, `{"a":[,1]}`,
		`{"a":[1 2]}`, `{"a":{"b"}}`, `{"a":{"b":}}`, `{"a":{1:2}}`, `{"a":{"b":1,}}`, `{"a":[}`, `{"a":{]}`,
		`{"a":[`, `{"a":[1`, `{"a":[1,`, `{"a":{`, `{"a":{"b"`, `{"a":{"b":`, `{"a":{"b":1`, `{"a":{"b":1,`,
		`{"a":t`, `{"a":tr`, `{"a":tru`, `{"a":true`, `{"a":f`, `{"a":fa`, `{"a":fal`, `{"a":fals`, `{"a":n`,
		`{"a":nu`, `{"a":nul`, `{"a":nulL}`, `{"a":trUe}`, `{"a":fAlse}`, `{"a":nil}`, `{"a":True}`,
		`{"a":-`, `{"a":-}`, `{"a":-a}`, `{"a":01}`, `{"a":-01}`, `{"a":1.}`, `{"a":1.`, `{"a":1.e1}`,
		`{"a":.5}`, `{"a":1e}`, `{"a":1e`, `{"a":1e+}`, `{"a":1e+`, `{"a":1E-7}`, `{"a":+1}`, `{"a":0x1}`,
		`{"a":Infinity}`, `{"a":NaN}`, `{"a":"\`, `{"a":"\u`, `{"a":"\u12`, `{"a":"\u12G4"}`, `{"a":"\x"}`,
		`{"a":"\'"}`, "{\"a\":\"\x00\"}", "{\"a\":\"\t\"}", "{\"a\":\"\x7f\"}", "{\"a\":\"\x1f\"}", `{'a':1}`,
		`{a:1}`, "{\"a\":1\x00}", "{\"a\xff\":1}", "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":\"\xf4\x90\x80\x80\"}",
		"{\"a\":\"é\"}é", "{\"a\":é}", `[]`, `"x"`, `1`, `null`, `{"a":1}]`,
		obj(`"label":"\ud83d\ude00"`), obj(`"label":"\ud83d"`), obj(`"label":"\ude00"`),
		obj(`"label":"\ud83d\u0041"`), obj(`"label":"\ud83d\ud83d\ude00"`), obj(`"label":"\ude00\ud83d\ude00"`),
		obj(`"label":"\uDBFF\uDFFF\u0000\u00e9\/\b\f\n\r\t\"\\"`), obj(`"label":"\ud83dx"`), obj(`"label":"\ud83d\n"`),
		obj(`"label":"\ud83d\uZZZZ"`), obj(`"label":"\ud83d\u12"`), obj(`"label":"\ud83d\`), obj(`"label":"a\u0000b"`),
		obj(`"label":"` + strings.Repeat(`\u00e9`, 200) + `"`), obj(`"label":"` + strings.Repeat("é", 300) + `"`),
		obj(`"tenant":"x"`), obj(`"Tenant":null`), obj(`"tim\u0065":null`), obj(`"\u0074ime":1.5`),
		obj(`"TIME":"x"`), obj(`"Label":1`), obj(`"ſdk":true`), obj(`"\u017fdk":[]`), obj(`"\u212aey":{}`),
		obj(`"KEY\u0000":1`), obj(`"ke\u0000y":1`), obj(`"\ud800":1`), obj(`"\ud800\udc00":1`),
		obj(`"label":1,"sdk":"x","time":"1"`), obj(`"label":1,"time":1.5`), obj(`"time":1.5,"label":1`),
		obj(`"time":1.5,"time":2.5`), obj(`"splitVersionNumber":1e3,"time":1.5`), obj(`"label":[],"sdk":{}`),
		obj(`"label":true,"Label":1`), obj(`"Sdk":1`), obj(`"sdk":1,"Sdk":"x"`), obj(`"x":1,"x":2,"X":{}`),
		obj(`"splitVersionNumber":-9223372036854775808`), obj(`"splitVersionNumber":-9223372036854775807`),
		obj(`"splitVersionNumber":9223372036854775807`), obj(`"splitVersionNumber":9223372036854775808`),
		obj(`"splitVersionNumber":99999999999999999999.5`), obj(`"splitVersionNumber":-0`),
		obj(`"splitVersionNumber":-0.0`), obj(`"splitVersionNumber":0e0`), obj(`"splitVersionNumber":[1]`),
		obj(`"splitVersionNumber":{"a":"` + strings.Repeat("é", 30) + `"}`), obj(`"splitVersionNumber":false`),
		obj(`"splitVersionNumber":"\u0031"`), obj(`"splitVersionNumber":null`),
		`{"tenant":"t","environmentName":"e","key":"k","split":"s","treatment":"on","time":-1}`,
		`{"tenant":"t","environmentName":"e","key":"k","split":"s","treatment":"on","time":-0}`,
		`{"tenant":"t","environmentName":"e","key":"k","split":"s","treatment":"on"}`,
		`{"tenant":"","environmentName":"","key":"k","split":"s","treatment":"on","time":1}`,
		`{"tenant":"t","environmentName":"e","key":"k","split":"s","treatment":null,"time":1}`,
		`{"tenant":"t","environmentName":"e","key":"k","split":"s","treatment":"on","time":1,"time":null}`,
		`{"tenant":"t","environmentName":"e","key":"k","split":"s","treatment":"on","time":null,"Time":1}`,
		`{"time":-1,"tenant":1}`, `{"time":-1,"Tenant":"x"}`, `{"time":-1}`, `{"x":1,"X":1}`,
		" \t{\"tenant\" \n:\r\"t\"\t,\"environmentName\":\"e\" , \"key\":\"k\",\"split\":\"s\",\"treatment\":\"on\",\"time\": 0 } \r\n",
	}
	for _, n := range []int{maxDepth - 2, maxDepth - 1, maxDepth, maxDepth + 1} {
		for _, open := range []string{"[", "{\"a\":"} {
			closer := "]"
			if open != "[" {
				closer = "}"
			}
			deep := strings.Repeat(open, n) + "1" + strings.Repeat(closer, n)
			lines = append(lines, obj(`"x":`+deep), obj(`"time":`+deep), obj(`"x":`+deep[:len(deep)/2]))
		}
	}
	for _, n := range []int{MaxLineBytes - len(sample) - 2, MaxLineBytes - len(sample) - 1} {
		long := strings.Replace(sample, "web-7", strings.Repeat("w", n), 1)
		lines = append(lines, long, " "+long+" ")
	}
	// Every prefix of the sample: the end of input in each state.
	for i := range len(sample) {
		lines = append(lines, sample[:i])
	}
	return lines
}()

func TestParseAgrees(t *testing.T) {
	for _, line := range trickyLines {
		agree(t, []byte(line))
	}
	for _, line := range parseSeeds(t) {
		agree(t, line)
	}
}

// TestParseCopies: the impression does not share memory with the line, which
// readers reuse for the next one.
func TestParseCopies(t *testing.T) {
	line := []byte(strings.Replace(sample, `"label":"default rule"`, `"label":"default\u0020rule"`, 1))
	want, err := referenceParse(line)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(line)
	for i := range line {
		line[i] = 'x'
	}
	if err != nil || got != want {
		t.Fatalf("Parse = %+v, %v; want %+v", got, err, want)
	}
}

// TestParseFieldIndexes: Parse's field indexes are those of Fields, and Fields are
// the reference parser's.
func TestParseFieldIndexes(t *testing.T) {
	if !slices.Equal(Fields, referenceFields) {
		t.Errorf("Fields %q, the reference reads %q", Fields, referenceFields)
	}
	for f, name := range Fields {
		if fastField([]byte(name)) != f {
			t.Errorf("fastField(%q) = %d, want %d", name, fastField([]byte(name)), f)
		}
	}
	if len(Fields) != numFields {
		t.Errorf("%d fields, Parse knows %d", len(Fields), numFields)
	}
}

// FuzzParseAgrees: referenceParse and Parse agree on every line: blank, invalid for the
// same reason, or the same impression.
func FuzzParseAgrees(f *testing.F) {
	for _, line := range parseSeeds(f) {
		f.Add(line)
	}
	for _, line := range trickyLines {
		if len(line) < 4096 {
			f.Add([]byte(line))
		}
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		agree(t, line)
	})
}

// BenchmarkParseVsReference compares the two parsers on a typical line.
func BenchmarkParseVsReference(b *testing.B) {
	line := []byte(sample)
	for _, c := range []struct {
		name  string
		parse func([]byte) (Impression, error)
	}{{"reference", referenceParse}, {"Parse", Parse}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(line)))
			for b.Loop() {
				if _, err := c.parse(line); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
