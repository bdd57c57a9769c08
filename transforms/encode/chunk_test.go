package encode

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/coder"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/runtime/exec"
	"github.com/google/uuid"
	"github.com/parquet-go/parquet-go"

	"github.com/outflow/outflow/internal/impression"
)

func imp(key string, t int64, origin uint64, machine string) impression.Impression {
	i := impression.Impression{Tenant: "acme", EnvironmentName: "production", Key: key, Split: "s",
		Treatment: "on", Time: t, MachineName: machine, Origin: origin, Properties: `{"a":"<b>"}`}
	i.ID = i.ComputeID()
	return i
}

// build adds imps to accumulators the way a runner may: split over several
// bundles, each marshalled across the shuffle, then merged.
func build(t *testing.T, f Format, bundles ...[]impression.Impression) Chunk {
	t.Helper()
	fn := &chunkFn{Format: f}
	merged := fn.CreateAccumulator()
	for _, b := range bundles {
		acc := fn.CreateAccumulator()
		for _, i := range b {
			acc = fn.AddInput(acc, i)
		}
		wire, err := marshalChunk(acc)
		if err != nil {
			t.Fatal(err)
		}
		back, err := unmarshalChunk(wire)
		if err != nil {
			t.Fatal(err)
		}
		merged = fn.MergeAccumulators(merged, back)
	}
	return fn.ExtractOutput(merged)
}

func TestFinishWithoutDuplicates(t *testing.T) {
	var a, b []impression.Impression
	for i := range 3000 { // several members per bundle
		x := imp(fmt.Sprintf("user-%d", i), int64(i), uint64(i), "m")
		if i%2 == 0 {
			a = append(a, x)
		} else {
			b = append(b, x)
		}
	}
	for _, f := range []Format{NDJSON, CSV} {
		c := build(t, f, a, b)
		if len(c.Members) < 3 {
			t.Errorf("%s: %d gzip members; want records compressed as they arrive", f, len(c.Members))
		}
		d, err := c.Finish(Header(f))
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		buf.ReadFrom(d.Reader())
		if int64(buf.Len()) != d.Bytes {
			t.Errorf("%s: Bytes = %d, stream has %d", f, d.Bytes, buf.Len())
		}
		recs, err := ReadObject(&buf, f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(recs) != 3000 || d.Records != 3000 || d.Duplicates != 0 {
			t.Fatalf("%s: %d records read, Data %+v; want 3000", f, len(recs), d)
		}
		seen := map[string]bool{}
		for _, r := range recs {
			seen[r.Key] = true
		}
		if len(seen) != 3000 {
			t.Errorf("%s: %d distinct keys", f, len(seen))
		}
	}
}

// Accumulators decoded from the shuffle are merged; the merge must not corrupt the
// members the decoded index sits in front of (found by the GCS sink's test).
func TestMergeOfDecodedChunks(t *testing.T) {
	fn := &chunkFn{Format: NDJSON}
	decoded := func(from, n int) Chunk {
		acc := fn.CreateAccumulator()
		for i := from; i < from+n; i++ {
			acc = fn.AddInput(acc, imp(fmt.Sprintf("user-%d", i), int64(i), uint64(i), "m"))
		}
		wire, _ := marshalChunk(acc)
		c, err := unmarshalChunk(wire)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := decoded(0, 2000), decoded(2000, 3) // a's data is far larger than b's index
	merged := fn.ExtractOutput(fn.MergeAccumulators(a, b))
	d, err := merged.Finish(nil)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := ReadObject(d.Reader(), NDJSON)
	if err != nil || len(recs) != 2003 {
		t.Fatalf("read %d records: %v", len(recs), err)
	}
}

func TestFinishKeepsFirstSeenCopy(t *testing.T) {
	// Three copies of one impression differing in a field outside the id; the copy
	// with the lowest origin is the first seen and must win, wherever it lands.
	first := imp("user-1", 100, 5, "first")
	later := imp("user-1", 100, 9, "later")
	latest := imp("user-1", 100, 12, "latest")
	other := imp("user-2", 100, 7, "x")
	if first.ID != later.ID {
		t.Fatal("copies must share an id")
	}
	for _, f := range []Format{NDJSON, CSV} {
		c := build(t, f, []impression.Impression{later, other}, []impression.Impression{latest, first})
		d, err := c.Finish(Header(f))
		if err != nil {
			t.Fatal(err)
		}
		recs, err := ReadObject(d.Reader(), f)
		if err != nil {
			t.Fatal(err)
		}
		if d.Records != 2 || d.Duplicates != 2 || len(recs) != 2 {
			t.Fatalf("%s: Data %+v, %d records; want 2 kept, 2 dropped", f, d, len(recs))
		}
		for _, r := range recs {
			if r.Key == "user-1" && r.MachineName != "first" {
				t.Errorf("%s: kept the %q copy, want the first seen", f, r.MachineName)
			}
		}
	}
}

func TestEncoding(t *testing.T) {
	i := imp(`user "q"`, 1767225600123, 1, "web,7\nx")
	i.SplitVersionNumber = 42
	got := string(Append(NDJSON, nil, &i))
	want := `{"environmentId":"","environmentName":"production","key":"user \"q\"","bucketingKey":"","split":"s","treatment":"on","label":"","time":1767225600123,"splitVersionNumber":42,"machineName":"web,7\nx","machineIp":"","sdk":"","sdkVersion":"","properties":"{\"a\":\"<b>\"}"}` + "\n"
	if got != want {
		t.Errorf("NDJSON =\n%s\nwant\n%s", got, want)
	}
	header := string(Header(CSV))
	if header != "environmentId,environmentName,key,bucketingKey,split,treatment,label,time,splitVersionNumber,machineName,machineIp,sdk,sdkVersion,properties\n" {
		t.Errorf("CSV header = %q", header)
	}
	row := string(Append(CSV, nil, &i))
	if want := `,production,"user ""q""",,s,on,,1767225600123,42,"web,7` + "\n" + `x",,,,"{""a"":""<b>""}"` + "\n"; row != want {
		t.Errorf("CSV row = %q, want %q", row, want)
	}
}

func TestUnmarshalChunkRefusesCorruption(t *testing.T) {
	c := build(t, NDJSON, []impression.Impression{imp("u", 1, 1, "m")})
	b, _ := marshalChunk(c)
	for i := range b {
		if _, err := unmarshalChunk(b[:i]); err == nil {
			t.Errorf("truncated to %d of %d bytes: no error", i, len(b))
		}
	}
}

func TestParquetObject(t *testing.T) {
	first := imp("user-1", 100, 5, "first")
	first.ReceivedAt = 1767225999000
	later := imp("user-1", 100, 9, "later")
	var many []impression.Impression
	for i := range 3000 {
		many = append(many, imp(fmt.Sprintf("u-%d", i), int64(i), uint64(100+i), "m"))
	}
	c := build(t, Parquet, append(many, later), []impression.Impression{first})
	o, err := FinishObject(c, Parquet)
	if err != nil {
		t.Fatal(err)
	}
	if o.Records != 3001 || o.Duplicates != 1 {
		t.Fatalf("object holds %d records, %d duplicates", o.Records, o.Duplicates)
	}
	body := o.Open()
	b, err := io.ReadAll(body)
	body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if o.Bytes() != int64(len(b)) || string(b[:4]) != "PAR1" {
		t.Fatalf("%d bytes counted, %d read, magic %q", o.Bytes(), len(b), b[:4])
	}
	rows, err := ReadParquet(b)
	if err != nil || len(rows) != 3001 {
		t.Fatalf("read %d rows: %v", len(rows), err)
	}
	for _, r := range rows {
		if r.Key == "user-1" && (r.MachineName != "first" || r.ReceptionTimestamp != 1767225999000 || r.SplitName != "s" || r.Timestamp != 100) {
			t.Errorf("row %+v: want the first copy seen, with its reception time", r)
		}
	}
	// A reader that stops early does not leave the writer behind.
	o2, _ := FinishObject(c, Parquet)
	r := o2.Open()
	r.Read(make([]byte, 10))
	r.Close()
}

func TestParquetColumns(t *testing.T) {
	schema := parquet.SchemaOf(ParquetRow{})
	var names []string
	for _, f := range schema.Fields() {
		names = append(names, f.Name())
		if f.Name() == "splitVersion" || f.Name() == "timestamp" || f.Name() == "receptionTimestamp" {
			if f.Type().Kind() != parquet.Int64 {
				t.Errorf("%s is %v, want INT64", f.Name(), f.Type())
			}
		} else if f.Type().Kind() != parquet.ByteArray || f.Type().LogicalType() == nil || f.Type().LogicalType().String() != "STRING" {
			t.Errorf("%s is %v, want a UTF-8 byte array", f.Name(), f.Type())
		}
	}
	want := "key label treatment splitName splitVersion environmentId trafficTypeId sdk sdkVersion timestamp receptionTimestamp environmentName bucketingKey machineName machineIp properties"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("columns\n%s\nwant\n%s", got, want)
	}
}

// A finished object's digest depends on which impressions it holds, not on their
// order, their bundles or their copies.
func TestDigest(t *testing.T) {
	x, y, z := imp("x", 1, 0, "m"), imp("y", 2, 0, "m"), imp("z", 3, 0, "m")
	digest := func(bundles ...[]impression.Impression) string {
		d, err := build(t, NDJSON, bundles...).Finish(nil)
		if err != nil {
			t.Fatal(err)
		}
		return d.Digest
	}
	d := digest([]impression.Impression{x, y}, []impression.Impression{z})
	if again := digest([]impression.Impression{z, y, x, y}); again != d {
		t.Errorf("the same impressions: digest %s, then %s", d, again)
	}
	if other := digest([]impression.Impression{x, y}); other == d {
		t.Errorf("different impressions share the digest %s", d)
	}
}

// A finished object says which impressions it holds, each once, and names them as
// SetDigest does.
func TestFinishSaysWhatItHolds(t *testing.T) {
	x, y, z := imp("x", 1, 900, "m"), imp("y", 2, 20, "m"), imp("z", 3, 1<<40, "m")
	c := build(t, NDJSON, []impression.Impression{z, y, x}, []impression.Impression{y, x})
	d, err := c.Finish(nil)
	if err != nil {
		t.Fatal(err)
	}
	got := slices.SortedFunc(slices.Values(d.IDs), func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	want := slices.SortedFunc(slices.Values([]uuid.UUID{x.ID, y.ID, z.ID}), func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	if !slices.Equal(got, want) || d.Records != 3 || d.Duplicates != 2 {
		t.Errorf("Finish: ids %v, %d records, %d copies; want %v, 3, 2", got, d.Records, d.Duplicates, want)
	}
	if d.Digest != SetDigest(want) {
		t.Errorf("digest %s, want %s", d.Digest, SetDigest(want))
	}
}

// without leaves out the impressions asked, and says where they came from.
func TestWithout(t *testing.T) {
	x, y, z := imp("x", 1, 10, "m"), imp("y", 2, 20, "m"), imp("z", 3, 30, "m")
	c := build(t, NDJSON, []impression.Impression{x, y}, []impression.Impression{z, y})
	kept, dropped, err := c.Without(map[uuid.UUID]bool{y.ID: true})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	if _, err := kept.Each(func(rec []byte) error {
		keys = append(keys, string(rec[strings.Index(string(rec), `"key":`):][:10]))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if kept.N != 2 || len(keys) != 2 || !strings.Contains(keys[0], `"x"`) || !strings.Contains(keys[1], `"z"`) {
		t.Errorf("kept %d records: %q", kept.N, keys)
	}
	if fmt.Sprint(dropped) != "[20 20]" {
		t.Errorf("dropped origins %v, want [20 20]", dropped)
	}
}

// Origins are kept in the index by difference from the entry before; they must come
// back whatever their order and size, across the shuffle, merges and records added
// after a merge.
func TestIndexKeepsOrigins(t *testing.T) {
	origins := [][]uint64{{7, 3, math.MaxUint64, 0}, {1 << 63, 1<<63 - 1}, {}, {42}}
	fn := &chunkFn{Format: NDJSON}
	merged := fn.CreateAccumulator()
	var want []uint64
	n := 0
	add := func(acc Chunk, o uint64) Chunk {
		want, n = append(want, o), n+1
		return fn.AddInput(acc, imp(fmt.Sprintf("user-%d", n), 1, o, "m"))
	}
	for i, bundle := range origins {
		acc := fn.CreateAccumulator()
		for _, o := range bundle {
			acc = add(acc, o)
		}
		if i%2 == 1 { // some across the shuffle, some merged where they were built
			wire, _ := marshalChunk(acc)
			var err error
			if acc, err = unmarshalChunk(wire); err != nil {
				t.Fatal(err)
			}
		}
		merged = add(fn.MergeAccumulators(merged, acc), uint64(1000+i))
	}
	c := fn.ExtractOutput(merged)
	if got := c.Origins(); !slices.Equal(got, want) {
		t.Errorf("origins %v, want %v", got, want)
	}
	if d, err := c.Finish(nil); err != nil || d.Records != len(want) {
		t.Errorf("Finish: %+v, %v; want %d records", d, err, len(want))
	}
}

func TestCorruptIndexRefused(t *testing.T) {
	c := build(t, NDJSON, []impression.Impression{imp("u", 1, 1, "m"), imp("v", 1, 2, "m")})
	for name, index := range map[string][]byte{
		"first by difference": append(append(bytes.Clone(c.Index[:16]), c.Index[16]&^1), c.Index[17:]...),
		"truncated":           c.Index[:len(c.Index)-1],
		"an entry too many":   append(bytes.Clone(c.Index), c.Index...),
	} {
		bad := c
		bad.Index = index
		if _, err := bad.Finish(nil); err == nil {
			t.Errorf("%s: Finish did not fail", name)
		}
		if _, err := bad.Each(func([]byte) error { return nil }); err == nil {
			t.Errorf("%s: Each did not fail", name)
		}
	}
}

func TestDataReadSeeker(t *testing.T) {
	d := Data{Members: [][]byte{[]byte("ab"), nil, []byte("cdef"), []byte("g")}}
	if err := iotest.TestReader(d.ReadSeeker(), []byte("abcdefg")); err != nil {
		t.Error(err)
	}
}

// unmarshalChunk keeps slices of the bytes it is given: the SDK must hand each
// element a buffer of its own. Two chunks decoded from one stream must both survive.
func TestDecodedChunksOwnTheirBytes(t *testing.T) {
	c := coder.CoderFrom(coder.LookupCustomCoder(reflect.TypeOf(Chunk{}))) // as init registered it
	enc, dec := exec.MakeElementEncoder(c), exec.MakeElementDecoder(c)
	a := build(t, NDJSON, []impression.Impression{imp("a", 1, 1, "m")})
	b := build(t, NDJSON, []impression.Impression{imp("b", 2, 2, "m")})
	var buf bytes.Buffer
	for _, ch := range []Chunk{a, b} {
		if err := enc.Encode(&exec.FullValue{Elm: ch}, &buf); err != nil {
			t.Fatal(err)
		}
	}
	var got []Chunk
	for range 2 {
		fv, err := dec.Decode(&buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fv.Elm.(Chunk))
	}
	for i, want := range []string{"a", "b"} {
		d, err := got[i].Finish(nil)
		if err != nil {
			t.Fatal(err)
		}
		recs, err := ReadObject(d.Reader(), NDJSON)
		if err != nil || len(recs) != 1 || recs[0].Key != want {
			t.Errorf("chunk %d: %v, %v; want the record of %q", i, recs, err, want)
		}
	}
}
