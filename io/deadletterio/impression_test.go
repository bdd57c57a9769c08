package deadletterio

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/transforms/encode"
)

// referenceImpression is Impression as encoding/json wrote it before MarshalJSON:
// the struct, by its tags.
type referenceImpression struct {
	Tenant string `json:"tenant"`
	encode.Record
}

// referenceUndeliverable is the line of an undeliverable impression as CONTRACT §4
// pins it, written by encoding/json.
type referenceUndeliverable struct {
	Integration string               `json:"integration"`
	Reason      string               `json:"reason"`
	Status      int                  `json:"status"`
	Attempts    int                  `json:"attempts"`
	Impression  *referenceImpression `json:"impression"`
	Source      string               `json:"source,omitempty"`
}

var testStrings = []string{"", "", "acme", "user-1042", "日本語", "emoji 🎉", "<b>&amp;</b>", "\u2028\u2029",
	"nul\x00tab\tnl\n", "\xff\xfe not utf-8", `{"plan":"pro"}`, `back\slash "quote"`, strings.Repeat("é", 300)}

var testInts = []int64{0, 1, -1, 1767225600123, math.MaxInt64, math.MinInt64}

func randomImpression(r *rand.Rand) *impression.Impression {
	str := func() string { return testStrings[r.IntN(len(testStrings))] }
	num := func() int64 { return testInts[r.IntN(len(testInts))] }
	imp := impression.Impression{Tenant: str(), EnvironmentID: str(), EnvironmentName: str(), Key: str(),
		BucketingKey: str(), Split: str(), Treatment: str(), Label: str(), Time: num(), SplitVersionNumber: num(),
		MachineName: str(), MachineIP: str(), SDK: str(), SDKVersion: str(), Properties: str()}
	imp.ID = imp.ComputeID()
	return &imp
}

// encodeJSON writes v as the dead-letter writer does: no HTML escapes, no newline.
func encodeJSON(t *testing.T, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// TestImpressionJSON: an undeliverable impression's line, written from the field
// table, is byte for byte what encoding/json wrote of the struct, with or without
// HTML escapes, and reads back as it was.
func TestImpressionJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 1))
	for i := range 2000 {
		imp := randomImpression(r)
		rec := Undeliverable("acme-hook", imp, 400, 3, "400 <Bad Request> & more", fmt.Sprint("batch-", i))
		old := &referenceImpression{Tenant: imp.Tenant, Record: encode.NewRecord(imp)}

		got, err := rec.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		want := encodeJSON(t, referenceUndeliverable{rec.Integration, rec.Reason, rec.Status, rec.Attempts, old, rec.Source})
		if !bytes.Equal(got, want) {
			t.Fatalf("line\n%s\nwant\n%s", got, want)
		}
		got, err = json.Marshal(rec.Impression)
		if err != nil {
			t.Fatal(err)
		}
		if want, _ := json.Marshal(old); !bytes.Equal(got, want) {
			t.Fatalf("json.Marshal\n%s\nwant\n%s", got, want)
		}

		coded, err := encodeRecord(rec)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeRecord(coded)
		if err != nil || !reflect.DeepEqual(back.Impression, old.normalized()) || back.Origin != rec.Origin {
			t.Fatalf("decoded %+v (%v)\nwant %+v", back.Impression, err, old.normalized())
		}
	}
}

// normalized is what decoding gives back: strings that are not UTF-8 made valid.
func (r *referenceImpression) normalized() *Impression {
	var out Impression
	b, _ := json.Marshal(r)
	json.Unmarshal(b, &out)
	return &out
}

// TestImpressionFieldNames: a dead letter's impression is written and read with the
// names of impression.Fields, in order (CONTRACT §4: "section 1 fields").
func TestImpressionFieldNames(t *testing.T) {
	var tags []string // what json.Unmarshal reads: the tags, embedded structs flattened
	var walk func(reflect.Type)
	walk = func(typ reflect.Type) {
		for f := range typ.Fields() {
			if f.Anonymous {
				walk(f.Type)
			} else {
				name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
				tags = append(tags, name)
			}
		}
	}
	walk(reflect.TypeFor[Impression]())
	if !slices.Equal(tags, impression.Fields) {
		t.Errorf("Impression's json names\n%q\nwant\n%q", tags, impression.Fields)
	}

	b, err := Undeliverable("x", imp("acme", "k"), 0, 1, "r", "s").MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var line struct{ Impression json.RawMessage }
	if err := json.Unmarshal(b, &line); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(line.Impression))
	var keys []string
	dec.Token() // {
	for dec.More() {
		key, _ := dec.Token()
		keys = append(keys, key.(string))
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(keys, impression.Fields) {
		t.Errorf("impression fields\n%q\nwant\n%q", keys, impression.Fields)
	}
}
