package objectio

import (
	"testing"
	"time"

	"github.com/outflow/outflow/transforms/encode"
)

// A run writes beside any earlier object that lies within one of its windows, of
// whatever shard, range, pane or integration id: it leaves out what they hold. It
// cannot write beside one of another format, or one across its windows.
func TestCannotWriteBeside(t *testing.T) {
	at := func(s string) time.Time { v, _ := time.Parse(time.RFC3339, s); return v }
	run := Target{ID: "acme-s3", Spec: encode.ObjectSpec{Format: encode.NDJSON}, Window: time.Hour,
		Since: at("2026-01-01T00:30:00Z").UnixMilli()}
	name := func(id, start, end string, shard int, pane, ext string) encode.ObjectName {
		return encode.ObjectName{Integration: id, Start: at(start), End: at(end), Shard: shard, Pane: pane, Ext: ext}
	}
	for _, c := range []struct {
		n        encode.ObjectName
		conflict bool
	}{
		{name("acme-s3", "2026-01-01T00:30:00Z", "2026-01-01T01:00:00Z", 1, "", ".ndjson.gz"), false}, // this run's part of the window
		{name("acme-s3", "2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z", 0, "", ".ndjson.gz"), false}, // a whole window
		{name("acme-s3", "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z", 0, "", ".ndjson.gz"), false}, // the window whole: --since cut it now
		{name("acme-s3", "2026-01-01T00:40:00Z", "2026-01-01T01:00:00Z", 0, "", ".ndjson.gz"), false}, // cut elsewhere before
		{name("acme-s3", "2026-01-01T01:00:00Z", "2026-01-01T01:30:00Z", 0, "", ".ndjson.gz"), false}, // a smaller window before
		{name("acme-s3", "2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z", 7, "", ".ndjson.gz"), false}, // more shards before
		{name("acme-s3", "2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z", 0, "9f86d081884c7d65", ".ndjson.gz"), false},
		{name("old-name", "2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z", 0, "", ".ndjson.gz"), false}, // the integration renamed
		{name("acme-s3", "2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z", 0, "", ".csv.gz"), true},      // another format
		{name("old-name", "2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z", 0, "", ".parquet"), true},    // another format, another id
		{name("acme-s3", "2026-01-01T00:00:00Z", "2026-01-01T02:00:00Z", 0, "", ".ndjson.gz"), true},   // a larger window before
		{name("acme-s3", "2026-01-01T00:30:00Z", "2026-01-01T01:30:00Z", 0, "", ".ndjson.gz"), true},   // across two windows
	} {
		if why := run.cannotWriteBeside(c.n); (why != "") != c.conflict {
			t.Errorf("%+v: %q, want conflict %v", c.n, why, c.conflict)
		}
	}
	if run.overlaps(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:30:00Z")) {
		t.Error("an object before --since is outside the run")
	}
}
