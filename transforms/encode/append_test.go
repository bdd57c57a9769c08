package encode

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/outflow/outflow/internal/impression"
)

// referenceNDJSON and referenceCSV are the encoders the appenders replaced: the
// bytes objects held before, which the appenders must keep writing.
func referenceNDJSON(imp *impression.Impression) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(NewRecord(imp)); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func referenceCSV(imp *impression.Impression) []byte {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write([]string{imp.EnvironmentID, imp.EnvironmentName, imp.Key, imp.BucketingKey, imp.Split, imp.Treatment,
		imp.Label, strconv.FormatInt(imp.Time, 10), strconv.FormatInt(imp.SplitVersionNumber, 10), imp.MachineName,
		imp.MachineIP, imp.SDK, imp.SDKVersion, imp.Properties})
	w.Flush()
	return buf.Bytes()
}

func referenceProperties(imp *impression.Impression) []byte {
	b, err := json.Marshal(NewProperties(imp))
	if err != nil {
		panic(err)
	}
	return b
}

// encodeAgrees fails t unless the appenders write the reference encoders' bytes for
// an impression whose string fields are all s (and key k), at time tm.
func encodeAgrees(t *testing.T, s, k string, tm int64) {
	t.Helper()
	imp := impression.Impression{Tenant: "acme", EnvironmentID: s, EnvironmentName: s, Key: k, BucketingKey: s,
		Split: s, Treatment: s, Label: s, Time: tm, SplitVersionNumber: -tm, MachineName: s, MachineIP: s, SDK: s,
		SDKVersion: s, Properties: k}
	if got, props := AppendProperties(nil, &imp), referenceProperties(&imp); !bytes.Equal(got, props) {
		t.Fatalf("properties of %q, %q:\ngot  %s\nwant %s", s, k, got, props)
	}
	for _, c := range []struct {
		f    Format
		want []byte
	}{{NDJSON, referenceNDJSON(&imp)}, {CSV, referenceCSV(&imp)}} {
		got := Append(c.f, []byte("prefix"), &imp)
		if !bytes.Equal(got[len("prefix"):], c.want) || string(got[:len("prefix")]) != "prefix" {
			t.Fatalf("%s of %q, %q:\ngot  %q\nwant %q", c.f, s, k, got, c.want)
		}
	}
}

// encodeSeeds are strings on every branch of JSON and CSV escaping.
var encodeSeeds = []string{"", "plain", `quo"te`, `back\slash`, "tab\there", "new\nline", "cr\rlf", "\b\f\x00\x01\x1f\x7f",
	"<html>&amp;", "\u2028\u2029", "é ü 日本", "bad \xff utf8 \xe2\x82", " leading space", "\tleading tab", "\u00a0nbsp",
	"\u0085nel", "\u3000ideographic", "a,b", `\.`, `\..`, "trailing ", `"`, `""`, "\xed\xa0\x80", "{\"plan\":\"pro\"}"}

func TestEncodeAgrees(t *testing.T) {
	for _, s := range encodeSeeds {
		for _, k := range []string{"user-1", s} {
			encodeAgrees(t, s, k, 1767225600123)
		}
	}
	encodeAgrees(t, "x", "y", 0)
	encodeAgrees(t, "x", "y", 1<<63-1)
}

// Every field in its own column: the fuzz target sets most fields alike.
func TestEncodeColumns(t *testing.T) {
	imp := impression.Impression{Tenant: "acme", EnvironmentID: "env-id", EnvironmentName: "production", Key: "user-1",
		BucketingKey: "bk", Split: "split", Treatment: "on", Label: "label", Time: 1767225600123, SplitVersionNumber: 42,
		MachineName: "web-1", MachineIP: "10.0.0.1", SDK: "go", SDKVersion: "6.7.0", Properties: `{"a":1}`}
	for _, c := range []struct {
		name      string
		got, want []byte
	}{
		{"ndjson", Append(NDJSON, nil, &imp), referenceNDJSON(&imp)},
		{"csv", Append(CSV, nil, &imp), referenceCSV(&imp)},
		{"properties", AppendProperties(nil, &imp), referenceProperties(&imp)},
	} {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("%s:\ngot  %s\nwant %s", c.name, c.got, c.want)
		}
	}
}

func TestHeader(t *testing.T) {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write(Columns)
	w.Flush()
	if got := Header(CSV); !bytes.Equal(got, buf.Bytes()) {
		t.Fatalf("Header(CSV) = %q, want %q", got, buf.Bytes())
	}
	if Header(NDJSON) != nil {
		t.Fatal("NDJSON objects have no header")
	}
}

// FuzzEncodeAgrees: NDJSON lines, CSV rows and event properties are byte for byte
// encoding/json's and encoding/csv's, for any strings, valid UTF-8 or not.
func FuzzEncodeAgrees(f *testing.F) {
	for _, s := range encodeSeeds {
		f.Add(s, "user-1", int64(1767225600123))
	}
	f.Fuzz(func(t *testing.T, s, k string, tm int64) {
		encodeAgrees(t, s, k, tm)
	})
}

func BenchmarkAppend(b *testing.B) {
	imp, err := impression.Parse([]byte(`{"tenant":"acme","environmentId":"env-production-1","environmentName":"production",` +
		`"key":"user-4711","bucketingKey":"","split":"new_checkout","treatment":"on","label":"default rule",` +
		`"time":1767225600123,"splitVersionNumber":1767000000000,"machineName":"web-7","machineIp":"10.1.2.3",` +
		`"sdk":"go","sdkVersion":"6.7.0","properties":"{\"plan\":\"pro\"}"}`))
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range []Format{NDJSON, CSV} {
		b.Run(string(f), func(b *testing.B) {
			var buf []byte
			b.ReportAllocs()
			for b.Loop() {
				buf = Append(f, buf[:0], &imp)
			}
		})
		b.Run(string(f)+"-reference", func(b *testing.B) {
			ref := map[Format]func(*impression.Impression) []byte{NDJSON: referenceNDJSON, CSV: referenceCSV}[f]
			b.ReportAllocs()
			for b.Loop() {
				ref(&imp)
			}
		})
	}
}
