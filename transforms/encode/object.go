package encode

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/outflow/outflow/internal/configkit"
)

// ObjectSpec says where and how an object store integration writes: the part of the
// `s3:` and `gcs:` sections they share, so both name and encode objects alike.
type ObjectSpec struct {
	Bucket string `yaml:"bucket" json:"bucket"`
	Prefix string `yaml:"prefix" json:"prefix"`
	Format Format `yaml:"format" json:"format"`
	// MaxConcurrentUploads bounds this integration's uploads in flight in one worker.
	MaxConcurrentUploads int `yaml:"max_concurrent_uploads" json:"max_concurrent_uploads"`
	// ObjectBytes is the size, before compression, a backfill aims its objects at
	// when the integration leaves its shards to the data.
	ObjectBytes int64 `yaml:"object_bytes" json:"object_bytes,omitempty"`
}

// DefaultMaxConcurrentUploads is the per-integration, per-worker upload bound.
const DefaultMaxConcurrentUploads = 4

// DefaultObjectBytes is ObjectSpec.ObjectBytes' default: 256 MiB.
const DefaultObjectBytes = 256 << 20

// Validate fills defaults and records every problem under path.
func (o *ObjectSpec) Validate(p *configkit.Problems, path string) {
	if configkit.CheckRequired(p, path+".bucket", o.Bucket) && !validBucket(o.Bucket) {
		p.Addf(path+".bucket", "%q is not a valid bucket name (3-63 characters of a-z, 0-9, '.', '-', '_')", o.Bucket)
	}
	// With or without a trailing slash (CONTRACT §2); keys are prefix + "/" + name.
	o.Prefix = strings.Trim(o.Prefix, "/")
	if strings.Contains(o.Prefix, "//") {
		p.Addf(path+".prefix", "%q must not contain //", o.Prefix)
	}
	if o.Format == "" {
		o.Format = NDJSON
	}
	configkit.CheckOneOf(p, path+".format", string(o.Format), Formats...)
	if o.MaxConcurrentUploads == 0 {
		o.MaxConcurrentUploads = DefaultMaxConcurrentUploads
	}
	if o.MaxConcurrentUploads < 0 {
		p.Addf(path+".max_concurrent_uploads", "must be >= 1; got %d", o.MaxConcurrentUploads)
	}
	if o.ObjectBytes == 0 {
		o.ObjectBytes = DefaultObjectBytes
	}
	if o.ObjectBytes < 1<<20 {
		p.Addf(path+".object_bytes", "must be at least 1 MiB (1048576); got %d", o.ObjectBytes)
	}
}

func validBucket(b string) bool {
	if len(b) < 3 || len(b) > 63 {
		return false
	}
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Key names the data object of one integration, window and shard; start and end are
// the window's, or the part of it a backfill's --since/--until covered. The name is
// deterministic, so a rerun overwrites the object instead of adding a duplicate, and
// date partitions let query engines prune by day and hour:
//
//	{prefix}/dt=2026-01-01/hour=00/acme-s3_20260101T000000Z_20260101T000500Z_000.ndjson.gz
//
// A stream writes a window once per pane (late data makes more), so its names also
// carry pane, the digest of the object's impressions (Chunk.Digest):
// …_000_9f86d081884c7d65.ndjson.gz. The same impressions get the same name again;
// other ones never take the name of an object already written.
func (o *ObjectSpec) Key(integration string, start, end time.Time, shard int, pane string) string {
	const stamp = "20060102T150405Z"
	start, end = start.UTC(), end.UTC()
	if pane != "" {
		pane = "_" + pane
	}
	name := fmt.Sprintf("dt=%s/hour=%02d/%s_%s_%s_%03d%s%s", start.Format("2006-01-02"), start.Hour(),
		integration, start.Format(stamp), end.Format(stamp), shard, pane, o.Format.Ext())
	if o.Prefix == "" {
		return name
	}
	return o.Prefix + "/" + name
}

// Partitions are the listing prefixes under which the data objects that start in
// [start, end) are found: each hour partition the range meets, or each day's when
// byDay or for a range longer than a day.
func (o *ObjectSpec) Partitions(start, end time.Time, byDay bool) []string {
	start, end = start.UTC(), end.UTC()
	base := ""
	if o.Prefix != "" {
		base = o.Prefix + "/"
	}
	var out []string
	if byDay || end.Sub(start) > 24*time.Hour {
		for d := start.Truncate(24 * time.Hour); d.Before(end); d = d.Add(24 * time.Hour) {
			out = append(out, base+"dt="+d.Format("2006-01-02")+"/")
		}
		return out
	}
	for h := start.Truncate(time.Hour); h.Before(end); h = h.Add(time.Hour) {
		out = append(out, fmt.Sprintf("%sdt=%s/hour=%02d/", base, h.Format("2006-01-02"), h.Hour()))
	}
	return out
}

// WindowStart is the start of the fixed window of size d that holds t, as Beam's
// fixed windows (no offset) assign it: a multiple of d since the Unix epoch.
func WindowStart(t time.Time, d time.Duration) time.Time {
	ms, size := t.UnixMilli(), d.Milliseconds()
	start := ms - ms%size
	if ms%size < 0 {
		start -= size
	}
	return time.UnixMilli(start).UTC()
}

// ObjectName is what an object's key says: the inverse of ObjectSpec.Key.
type ObjectName struct {
	Integration string
	Start, End  time.Time
	Shard       int
	Pane        string // "" but for a stream's objects
	Ext         string // the format's extension: .ndjson.gz, .csv.gz or .parquet
}

// The end may be in the year 10000: the end of the window of the last impressions
// (impression.MaxTime).
var objectName = regexp.MustCompile(`(?:^|/)dt=\d{4}-\d{2}-\d{2}/hour=\d{2}/([a-z0-9-]+)_(\d{8}T\d{6}Z)_(\d{8,9}T\d{6}Z)_(\d{3,})(?:_([0-9a-f]{16}))?(\.ndjson\.gz|\.csv\.gz|\.parquet)$`)

// ParseKey reads a data object's key; ok is false for anything else under the prefix
// (manifests, markers) or a key of another format.
func (o *ObjectSpec) ParseKey(key string) (n ObjectName, ok bool) {
	n, ok = ParseKey(key)
	if !ok || n.Ext != o.Format.Ext() {
		return ObjectName{}, false
	}
	return n, true
}

// ParseKey reads a data object's key, whatever its format; ok is false for anything
// else.
func ParseKey(key string) (n ObjectName, ok bool) {
	m := objectName.FindStringSubmatch(key)
	if m == nil {
		return n, false
	}
	start, err1 := parseStamp(m[2])
	end, err2 := parseStamp(m[3])
	shard, err3 := strconv.Atoi(m[4])
	if err1 != nil || err2 != nil || err3 != nil {
		return n, false
	}
	return ObjectName{Integration: m[1], Start: start, End: end, Shard: shard, Pane: m[5], Ext: m[6]}, true
}

// parseStamp reads a time as Key writes it: 20060102T150405Z, or with a year of five
// digits (time.Format writes the year 10000 so; time.Parse reads four).
func parseStamp(v string) (time.Time, error) {
	if len(v) != len("20060102T150405Z")+1 {
		return time.Parse("20060102T150405Z", v)
	}
	year, err := strconv.Atoi(v[:5])
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse("20060102T150405Z", "2000"+v[5:]) // a leap year, for February 29
	if err != nil {
		return time.Time{}, err
	}
	return time.Date(year, t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, time.UTC), nil
}
