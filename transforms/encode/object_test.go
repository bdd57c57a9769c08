package encode

import (
	"strings"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/configkit"
)

func TestKey(t *testing.T) {
	start := time.Date(2026, 1, 1, 23, 55, 0, 0, time.UTC)
	end := start.Add(5 * time.Minute)
	for _, c := range []struct{ prefix, want string }{
		{"", "dt=2026-01-01/hour=23/acme-s3_20260101T235500Z_20260102T000000Z_003.ndjson.gz"},
		{"split/impressions", "split/impressions/dt=2026-01-01/hour=23/acme-s3_20260101T235500Z_20260102T000000Z_003.ndjson.gz"},
	} {
		o := ObjectSpec{Bucket: "b", Prefix: c.prefix, Format: NDJSON}
		if got := o.Key("acme-s3", start, end, 3, ""); got != c.want {
			t.Errorf("Key with prefix %q = %q, want %q", c.prefix, got, c.want)
		}
		n, ok := o.ParseKey(c.want)
		if !ok || n.Integration != "acme-s3" || !n.Start.Equal(start) || !n.End.Equal(end) || n.Shard != 3 {
			t.Errorf("ParseKey(%q) = %+v, %v", c.want, n, ok)
		}
	}
}

// The window of the last impressions there can be (impression.MaxTime) ends in the
// year 10000; its name reads back.
func TestKeyOfTheLastWindow(t *testing.T) {
	o := ObjectSpec{Prefix: "p", Format: NDJSON}
	for _, d := range []time.Duration{5 * time.Minute, 48 * time.Hour} {
		start := WindowStart(time.UnixMilli(253402300799999), d)
		key := o.Key("acme-s3", start, start.Add(d), 0, "9f86d081884c7d65")
		n, ok := o.ParseKey(key)
		if !ok || !n.Start.Equal(start) || !n.End.Equal(start.Add(d)) || n.End.Year() != 10000 {
			t.Errorf("ParseKey(%q) = %+v, %v; want %v to %v", key, n, ok, start, start.Add(d))
		}
	}
	if n, ok := ParseKey("dt=2026-01-01/hour=00/a_20260101T000000Z_2026013T000000Z_000.ndjson.gz"); ok {
		t.Errorf("a malformed end stamp parsed: %+v", n)
	}
}

// A stream's object names carry the pane's digest, and read back.
func TestKeyWithPane(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o := ObjectSpec{Bucket: "b", Prefix: "p", Format: Parquet}
	key := o.Key("acme-s3", start, start.Add(time.Minute), 0, "9f86d081884c7d65")
	if want := "p/dt=2026-01-01/hour=00/acme-s3_20260101T000000Z_20260101T000100Z_000_9f86d081884c7d65.parquet"; key != want {
		t.Errorf("Key = %q, want %q", key, want)
	}
	if n, ok := o.ParseKey(key); !ok || n.Pane != "9f86d081884c7d65" || n.Shard != 0 || n.Integration != "acme-s3" {
		t.Errorf("ParseKey(%q) = %+v, %v", key, n, ok)
	}
}

func TestParseKeyRefusesOthers(t *testing.T) {
	o := ObjectSpec{Format: NDJSON}
	for _, key := range []string{"manifest.json", "dt=2026-01-01/hour=00/acme_20260101T000000Z_20260101T000500Z_000.csv.gz",
		"dt=2026-01-01/hour=00/acme_20260101T000000Z_20260101T000500Z_000.ndjson", "_SUCCESS"} {
		if n, ok := o.ParseKey(key); ok {
			t.Errorf("ParseKey(%q) = %+v", key, n)
		}
	}
}

func TestObjectSpecValidate(t *testing.T) {
	for prefix, want := range map[string]string{"/a/b/": "a/b", "a/": "a", "": ""} {
		o := ObjectSpec{Bucket: "bucket", Prefix: prefix}
		var p configkit.Problems
		o.Validate(&p, "s3")
		if o.Prefix != want || len(p.List()) != 0 || o.Format != NDJSON {
			t.Errorf("prefix %q -> %q (%v), want %q", prefix, o.Prefix, p.List(), want)
		}
	}
	o := ObjectSpec{Bucket: "Bad Bucket", Prefix: "a//b", Format: "xml"}
	var p configkit.Problems
	o.Validate(&p, "s3")
	all := strings.Join(p.List(), "\n")
	for _, want := range []string{"s3.bucket", "s3.prefix", "s3.format"} {
		if !strings.Contains(all, want) {
			t.Errorf("problems %q lack %s", all, want)
		}
	}
}
