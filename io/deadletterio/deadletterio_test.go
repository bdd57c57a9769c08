package deadletterio

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/passert"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	"github.com/outflow/outflow/internal/impression"
)

func TestMain(m *testing.M) { ptest.Main(m) }

func init() { register.Function1x1(digest) }

// digest says which line a record holds: its source, length and a hash of its exact
// raw bytes.
func digest(r Record) string {
	raw := r.RawBytes()
	return fmt.Sprintf("%s|%d|%x", r.Source, len(raw), sha256.Sum256(raw))
}

func imp(tenant, key string) *impression.Impression {
	i := impression.Impression{Tenant: tenant, EnvironmentName: "production", Key: key, Split: "s", Treatment: "on", Time: 1}
	i.ID = i.ComputeID()
	return &i
}

// writeStore runs Write of records into dir.
func writeStore(t *testing.T, dir string, records []Record, opts ...WriteOptionFn) {
	t.Helper()
	p, s := beam.NewPipelineWithRoot()
	Write(s, dir, beam.CreateList(s, records), opts...)
	if err := ptest.Run(p); err != nil {
		t.Fatal(err)
	}
}

// readFile returns the records of one store file, in file order.
func readFile(t *testing.T, path string) []Record {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []Record
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 256<<20)
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, r)
	}
	return out
}

// Write with Receipts, then ReadTally: the counts of what was written, by kind and by
// integration; a rerun overwrites the receipts instead of adding to them; receipts
// are never among the files replay reads, and ClearReceipts removes them.
func TestReceiptsTally(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dead-letter")
	records := []Record{
		Invalid([]byte("a,b,c"), "not JSON", "in/a.csv:1", 0),
		Invalid([]byte("d,e,f"), "not JSON", "in/a.csv:2", 0),
		Invalid([]byte("\xff\xfe"), "not JSON", "in/b.ndjson:7", 0),
		FileError("in/b.ndjson.gz", "reading in/b.ndjson.gz stopped after line 9: unexpected EOF", 0),
		Undeliverable("acme-hook", imp("acme", "u1"), 400, 1, "HTTP 400", "batch-1"),
		Undeliverable("acme-hook", imp("acme", "u2"), 400, 1, "HTTP 400", "batch-1"),
		Undeliverable("acme-hook", imp("acme", "u3"), 410, 1, "HTTP 410", "batch-2"),
		Undeliverable("globex-amp", imp("globex", "u4"), 0, 5, "timeout", "batch-3"),
	}
	want := Tally{Files: 6, InvalidLines: 3, FileErrors: 1, DeadLettered: map[string]int64{"acme-hook": 3, "globex-amp": 1}}
	ctx := context.Background()
	for range 2 { // the second run overwrites the first's files and receipts
		writeStore(t, dir, records, Receipts("run-1"))
		got, err := ReadTally(ctx, dir, "run-1")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("ReadTally = %+v, want %+v", got, want)
		}
	}
	if got, err := ReadTally(ctx, dir, "run-2"); err != nil || !reflect.DeepEqual(got, Tally{}) {
		t.Errorf("ReadTally of a run with no receipts = %+v, %v; want zero, nil", got, err)
	}
	if _, err := ReadTally(ctx, dir, "../x"); err == nil {
		t.Error("ReadTally accepted a run id with a path in it")
	}

	for _, glob := range []string{"*/*.ndjson*", "replaying/*/*.ndjson*", "*/*/*.ndjson*"} {
		matches, _ := filepath.Glob(filepath.Join(dir, glob))
		for _, m := range matches {
			if strings.Contains(m, receiptsDir) {
				t.Errorf("replay's glob %s matches %s", glob, m)
			}
		}
	}
	receipts, _ := filepath.Glob(filepath.Join(dir, receiptsDir, "run-1", "*"))
	if len(receipts) != want.Files {
		t.Errorf("%d receipts, want %d: %q", len(receipts), want.Files, receipts)
	}
	for _, r := range receipts {
		if !strings.HasSuffix(r, ".json") || strings.Contains(r, ".ndjson") {
			t.Errorf("receipt %s", r)
		}
	}

	if err := ClearReceipts(ctx, dir, "run-1"); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadTally(ctx, dir, "run-1"); err != nil || !reflect.DeepEqual(got, Tally{}) {
		t.Errorf("ReadTally after ClearReceipts = %+v, %v; want zero", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, receiptsDir)); !os.IsNotExist(err) {
		t.Errorf("%s left after ClearReceipts: %v", receiptsDir, err)
	}
	if n, _ := filepath.Glob(filepath.Join(dir, "*", "*.ndjson")); len(n) != want.Files {
		t.Errorf("ClearReceipts touched the store: %d files left, want %d", len(n), want.Files)
	}

	// A receipt that cannot be read is an error, never a zero.
	bad := filepath.Join(dir, receiptsDir, "run-3", "0000000000000000.json")
	os.MkdirAll(filepath.Dir(bad), 0o755)
	os.WriteFile(bad, []byte("{not json"), 0o644)
	if _, err := ReadTally(ctx, dir, "run-3"); err == nil {
		t.Error("ReadTally of a corrupt receipt: no error")
	}
}

// Raw lines that are not UTF-8, or longer than 1 MiB, come back byte for byte: through
// the Record's Beam coder, Write, the store's JSON and Read.
func TestRawRoundTrip(t *testing.T) {
	long := strings.Repeat(`{"tenant":"acme","k":"é\u2028\t<&>"}`, (3<<20)/36) // > 1 MiB, valid UTF-8
	longBinary := bytes.Repeat([]byte{'x', 0xff, 0x00, 0xc3, '"', '\\', '\n', '\r'}, (2<<20)/8)
	raws := map[string][]byte{
		"in/a.ndjson:1": []byte("\xff\xfe{\"tenant\": \"acme\xe9\"}"),
		"in/a.ndjson:2": []byte(long),
		"in/a.ndjson:3": longBinary,
		"in/a.ndjson:4": []byte("caf\xe9 latin-1,\x80"),
		"in/a.ndjson:5": []byte("plain \u2028 line\r"),
	}
	var records []Record
	var want []string
	for src, raw := range raws {
		r := Invalid(raw, "bad line", src, 42)
		if !bytes.Equal(r.RawBytes(), raw) {
			t.Fatalf("%s: Invalid changed the line", src)
		}
		if (r.RawBase64 != nil) == utf8.Valid(raw) {
			t.Errorf("%s: RawBase64 set: %v, line valid UTF-8: %v", src, r.RawBase64 != nil, utf8.Valid(raw))
		}
		coded, err := encodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeRecord(coded)
		if err != nil || !reflect.DeepEqual(back, r) {
			t.Fatalf("%s: coder round trip: %v", src, err)
		}
		records = append(records, r)
		want = append(want, digest(r))
	}
	dir := filepath.Join(t.TempDir(), "dead-letter")
	writeStore(t, dir, records)

	// A line of the store that is not a record is kept byte for byte (its line end
	// aside).
	os.MkdirAll(filepath.Join(dir, "junk"), 0o755)
	imp := `{"tenant":"acme","key":"k","time":1}` // a JSON object, but no record: not emptied
	os.WriteFile(filepath.Join(dir, "junk", "x.ndjson"), []byte("\xffnot a record\r\nnull\n"+imp+"\n"), 0o644)
	want = append(want, digest(Record{Raw: "\xffnot a record", Source: filepath.Join(dir, "junk", "x.ndjson") + ":1"}),
		digest(Record{Raw: "null", Source: filepath.Join(dir, "junk", "x.ndjson") + ":2"}),
		digest(Record{Raw: imp, Source: filepath.Join(dir, "junk", "x.ndjson") + ":3"}))

	p, s := beam.NewPipelineWithRoot()
	read := beam.Reshuffle(s, Read(s, dir+"/*/*.ndjson")) // through the coder again
	passert.EqualsList(s, beam.ParDo(s, digest, read), want)
	ptest.RunAndValidate(t, p)

	files, _ := filepath.Glob(filepath.Join(dir, "invalid", "*.ndjson"))
	var stored []Record
	for _, f := range files {
		stored = append(stored, readFile(t, f)...)
	}
	for _, r := range stored {
		if r.RawBase64 != nil && (r.Raw == "" || !strings.Contains(r.Raw, "\uFFFD")) {
			t.Errorf("%s: raw is not a readable copy of a non-UTF-8 line: %.40q", r.Source, r.Raw)
		}
	}
}

// The invalid lines of one big input file are spread over blocks of lines, one file
// each, narrower for long lines; every line is written exactly once, in line order.
func TestInvalidLinesInBlocks(t *testing.T) {
	const n = 20000
	huge := map[int]bool{5: true, 9000: true, 9001: true}
	var records []Record
	for i := 1; i <= n; i++ {
		raw := fmt.Sprintf("line %d;not;json", i)
		if huge[i] {
			raw = strings.Repeat("z", 6<<20)
		}
		records = append(records, Invalid([]byte(raw), "not JSON", fmt.Sprintf("s3://in/big.csv:%d", i), 0))
	}
	records = append(records, FileError("s3://in/big.csv", "reading s3://in/big.csv stopped after line 20000: reset", 0))
	dir := filepath.Join(t.TempDir(), "dead-letter")
	writeStore(t, dir, records, Receipts("blocks"))

	files, _ := filepath.Glob(filepath.Join(dir, "invalid", "*.ndjson"))
	var names []string
	seen := map[string]int{}
	for _, f := range files {
		names = append(names, strings.TrimPrefix(filepath.Base(f), "big.csv-"))
		recs := readFile(t, f)
		if !slices.IsSortedFunc(recs, func(a, b Record) int { return compareSource(a.Source, b.Source) }) {
			t.Errorf("%s: records out of line order", f)
		}
		for _, r := range recs {
			seen[r.Source]++
		}
	}
	slices.Sort(names)
	var wantNames []string
	h := strings.TrimSuffix(strings.TrimPrefix(FileName(&records[n]), "invalid/big.csv-"), ".ndjson")
	for _, r := range []string{"", "-1-8192", "-8193-16384", "-16385-24576", "-5-6", "-8999-9000", "-9001-9002"} {
		wantNames = append(wantNames, h+r+".ndjson")
	}
	slices.Sort(wantNames)
	if !slices.Equal(names, wantNames) {
		t.Errorf("files %q, want %q", names, wantNames)
	}
	if len(seen) != n+1 {
		t.Errorf("%d distinct records stored, want %d", len(seen), n+1)
	}
	for src, c := range seen {
		if c != 1 {
			t.Errorf("%s stored %d times", src, c)
		}
	}
	got, err := ReadTally(context.Background(), dir, "blocks")
	if err != nil || got.InvalidLines != n || got.FileErrors != 1 || got.Files != len(wantNames) {
		t.Errorf("ReadTally = %+v, %v", got, err)
	}
}

// A stream's invalid records go to one file a Kafka partition and block of offsets,
// not one file each; every record is written once.
func TestKafkaRecordsInBlocks(t *testing.T) {
	var records []Record
	for p := range int32(2) {
		for off := range int64(10000) {
			records = append(records, Invalid([]byte("not json"), "line is not a JSON object", fmt.Sprintf(KafkaSource, p, off), uint64(off)))
		}
	}
	dir := filepath.Join(t.TempDir(), "dead-letter")
	writeStore(t, dir, records)
	files, _ := filepath.Glob(filepath.Join(dir, "invalid", "*.ndjson"))
	var names []string
	seen := map[string]int{}
	for _, f := range files {
		names = append(names, filepath.Base(f))
		for _, r := range readFile(t, f) {
			seen[r.Source]++
		}
	}
	slices.Sort(names)
	want := []string{"kafka-partition-0-0-8191.ndjson", "kafka-partition-0-8192-16383.ndjson",
		"kafka-partition-1-0-8191.ndjson", "kafka-partition-1-8192-16383.ndjson"}
	if !slices.Equal(names, want) {
		t.Errorf("files %q, want %q", names, want)
	}
	if len(seen) != len(records) {
		t.Errorf("%d distinct records stored, want %d", len(seen), len(records))
	}
	for src, c := range seen {
		if c != 1 {
			t.Errorf("%s stored %d times", src, c)
		}
	}
}

func TestBlock(t *testing.T) {
	for _, c := range []struct{ line, size, first, last int }{
		{1, 100, 1, 8192},
		{8192, 2048, 1, 8192},
		{8193, 100, 8193, 16384},
		{5, 2049, 1, 4096},
		{5, 6 << 20, 5, 6},
		{7, 16 << 20, 7, 7},
		{7, 1 << 30, 7, 7},
	} {
		if f, l := block(c.line, c.size); f != c.first || l != c.last {
			t.Errorf("block(%d, %d) = %d-%d, want %d-%d", c.line, c.size, f, l, c.first, c.last)
		}
	}
}
