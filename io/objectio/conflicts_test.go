package objectio

import (
	"testing"
	"time"

	"github.com/outflow/outflow/transforms/encode"
)

// An object already stored is a conflict unless the run writes one of the same name:
// same window (or window part), format and shard range, not a stream's pane.
func TestWouldNotWrite(t *testing.T) {
	at := func(s string) time.Time { v, _ := time.Parse(time.RFC3339, s); return v }
	run := Target{ID: "acme-s3", Spec: encode.ObjectSpec{Format: encode.NDJSON}, Window: time.Hour, Shards: 2,
		Since: at("2026-01-01T00:30:00Z").UnixMilli()}
	name := func(start, end string, shard int, pane, ext string) encode.ObjectName {
		return encode.ObjectName{Integration: "acme-s3", Start: at(start), End: at(end), Shard: shard, Pane: pane, Ext: ext}
	}
	for _, c := range []struct {
		n        encode.ObjectName
		conflict bool
	}{
		{name("2026-01-01T00:30:00Z", "2026-01-01T01:00:00Z", 1, "", ".ndjson.gz"), false}, // this run's part of the window
		{name("2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z", 0, "", ".ndjson.gz"), false}, // a whole window
		{name("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z", 0, "", ".ndjson.gz"), true},  // the window whole: --since cut it now
		{name("2026-01-01T00:40:00Z", "2026-01-01T01:00:00Z", 0, "", ".ndjson.gz"), true},  // cut elsewhere before
		{name("2026-01-01T01:00:00Z", "2026-01-01T01:30:00Z", 0, "", ".ndjson.gz"), true},  // another window size
		{name("2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z", 2, "", ".ndjson.gz"), true},  // more shards before
		{name("2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z", 0, "", ".csv.gz"), true},     // another format
		{name("2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z", 0, "9f86d081884c7d65", ".ndjson.gz"), true},
	} {
		if why := run.wouldNotWrite(c.n); (why != "") != c.conflict {
			t.Errorf("%+v: %q, want conflict %v", c.n, why, c.conflict)
		}
	}
	if run.overlaps(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:30:00Z")) {
		t.Error("an object before --since is outside the run")
	}
}
