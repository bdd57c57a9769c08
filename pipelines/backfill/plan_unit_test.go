package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/configkit"
	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/io/s3io"
	"github.com/outflow/outflow/transforms/encode"
	"github.com/outflow/outflow/transforms/route"
)

func TestTimeSlices(t *testing.T) {
	day := 24 * time.Hour
	d := func(s string) time.Time { v, _ := time.Parse(time.RFC3339, s); return v }
	seen := []time.Time{d("2026-01-01T05:00:00Z"), d("2026-01-01T20:00:00Z"), d("2026-01-03T01:00:00Z"), d("9999-12-31T00:00:00Z")}
	got := timeSlices(planOptions{Slice: day}, seen)
	want := [][2]time.Time{
		{{}, d("2026-01-03T00:00:00Z")},                        // open start; the empty 2 January merged in
		{d("2026-01-03T00:00:00Z"), d("9999-12-31T00:00:00Z")}, // the years without data go with it
		{d("9999-12-31T00:00:00Z"), {}},                        // open end
	}
	if len(got) != len(want) {
		t.Fatalf("slices %v, want %v", got, want)
	}
	for i := range want {
		if !got[i][0].Equal(want[i][0]) || !got[i][1].Equal(want[i][1]) {
			t.Errorf("slice %d = %v, want %v", i, got[i], want[i])
		}
	}
	// Within --since/--until, the ends are those given.
	got = timeSlices(planOptions{Slice: day, From: d("2026-01-01T03:00:00Z"), Until: d("2026-01-02T12:00:00Z")},
		[]time.Time{d("2026-01-01T05:00:00Z"), d("2026-01-02T01:00:00Z")})
	if len(got) != 2 || !got[0][0].Equal(d("2026-01-01T03:00:00Z")) || !got[1][1].Equal(d("2026-01-02T12:00:00Z")) {
		t.Errorf("bounded slices %v", got)
	}
	if got := timeSlices(planOptions{}, seen); len(got) != 1 {
		t.Errorf("without slicing: %v", got)
	}
}

func TestSplitLarge(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var hours []time.Time
	for h := range 10 {
		hours = append(hours, base.Add(time.Duration(h)*time.Hour))
	}
	// 100 impressions an hour over ten hours.
	count := func(from, until time.Time) int64 {
		var n int64
		for _, h := range hours {
			if (from.IsZero() || !h.Before(from)) && (until.IsZero() || h.Before(until)) {
				n += 100
			}
		}
		return n
	}
	got := splitLarge([][2]time.Time{{}}, hours, count, 350)
	if len(got) != 4 || !got[0][0].IsZero() || !got[3][1].IsZero() {
		t.Fatalf("slices %v: want 4 covering everything, ends open", got)
	}
	for i, sl := range got {
		if n := count(sl[0], sl[1]); n > 350 {
			t.Errorf("slice %d holds %d > 350", i, n)
		}
		if i > 0 && !sl[0].Equal(got[i-1][1]) {
			t.Errorf("gap or overlap between slices %d and %d: %v", i-1, i, got)
		}
	}
	if got := splitLarge([][2]time.Time{{}}, hours, count, 0); len(got) != 1 {
		t.Errorf("no bound, yet cut: %v", got)
	}
}

// Cuts between jobs move down to window boundaries (multiples of the window since the
// Unix epoch); slices left empty merge; open ends and --since/--until stay.
func TestAlignCuts(t *testing.T) {
	d := func(s string) time.Time { v, _ := time.Parse(time.RFC3339, s); return v }
	h := func(n int) time.Time { return d("2026-01-01T00:00:00Z").Add(time.Duration(n) * time.Hour) }
	for _, c := range []struct {
		window time.Duration
		in     [][2]time.Time
		want   [][2]time.Time
	}{
		// 7m windows: 01:00 is inside the window that starts at 00:56 (epoch-aligned).
		{7 * time.Minute, [][2]time.Time{{{}, h(1)}, {h(1), h(2)}, {h(2), {}}},
			[][2]time.Time{{{}, d("2026-01-01T00:56:00Z")}, {d("2026-01-01T00:56:00Z"), d("2026-01-01T01:59:00Z")}, {d("2026-01-01T01:59:00Z"), {}}}},
		// 2h windows over hour cuts: 01:00 and 03:00 fall inside windows.
		{2 * time.Hour, [][2]time.Time{{h(0), h(1)}, {h(1), h(3)}, {h(3), h(5)}},
			[][2]time.Time{{h(0), h(2)}, {h(2), h(5)}}},
		// 48h windows over 24h slices: one job.
		{48 * time.Hour, [][2]time.Time{{h(5), h(24)}, {h(24), h(48)}},
			[][2]time.Time{{h(5), h(48)}}},
		// Windows that divide the cuts change nothing.
		{time.Hour, [][2]time.Time{{{}, h(1)}, {h(1), {}}}, [][2]time.Time{{{}, h(1)}, {h(1), {}}}},
	} {
		got := alignCuts(c.in, c.window)
		if len(got) != len(c.want) {
			t.Errorf("window %v: %v, want %v", c.window, got, c.want)
			continue
		}
		for i := range got {
			if !got[i][0].Equal(c.want[i][0]) || !got[i][1].Equal(c.want[i][1]) {
				t.Errorf("window %v: %v, want %v", c.window, got, c.want)
				break
			}
		}
	}
}

// A cut at a multiple of commonWindow is a boundary of every object store window of
// the job; HTTP integrations do not count.
func TestCommonWindow(t *testing.T) {
	in := func(typ config.Type, w time.Duration) config.Integration {
		return config.Integration{Type: typ, Window: configkit.Duration(w)}
	}
	for _, c := range []struct {
		ints []config.Integration
		want time.Duration
	}{
		{nil, 0},
		{[]config.Integration{in(config.Webhook, 10*time.Second)}, 0},
		{[]config.Integration{in(config.S3, 5*time.Minute), in(config.GCS, 5*time.Minute)}, 5 * time.Minute},
		{[]config.Integration{in(config.S3, 5*time.Minute), in(config.S3, 7*time.Minute), in(config.Webhook, time.Hour)}, 35 * time.Minute},
		{[]config.Integration{in(config.S3, time.Hour), in(config.GCS, 48*time.Hour)}, 48 * time.Hour},
		{[]config.Integration{in(config.S3, 1001*time.Millisecond), in(config.S3, 1003*time.Millisecond),
			in(config.S3, 1009*time.Millisecond), in(config.S3, 1013*time.Millisecond), in(config.S3, 100_003*time.Millisecond),
			in(config.S3, 1_000_003*time.Millisecond)}, maxCommonWindow},
	} {
		if got := commonWindow(c.ints); got != c.want {
			t.Errorf("commonWindow(%v) = %v, want %v", c.ints, got, c.want)
		}
	}
}

// sizeShards gives a large integration's windows several objects and a small one's
// one, and leaves configured shards and HTTP integrations alone.
func TestSizeShards(t *testing.T) {
	obj := func(id string, shards int) config.Integration {
		return config.Integration{ID: id, Type: config.S3, Window: configkit.Duration(5 * time.Minute), Shards: shards,
			S3: &s3io.Config{ObjectSpec: encode.ObjectSpec{ObjectBytes: 10 << 20}}}
	}
	cfg := &config.Config{Integrations: []config.Integration{obj("big", 0), obj("small", 0), obj("fixed", 3),
		{ID: "hook", Type: config.Webhook, Shards: 4}}}
	est := newEstimate()
	est.sampled, est.sampledBytes = 1000, 1000*500 // 500 bytes an impression
	// big: 1.2M an hour is 100,000 in a 5m window, 50 MB: 5 objects of 10 MiB.
	est.perHour = map[string]map[int64]float64{"big": {1: 600_000, 2: 1_200_000}, "small": {1: 1000}, "fixed": {1: 1e9}}
	sizeShards(cfg, est)
	for i, want := range []int{5, 1, 3, 4} {
		if got := cfg.Integrations[i].Shards; got != want {
			t.Errorf("%s: %d shards, want %d", cfg.Integrations[i].ID, got, want)
		}
	}
}

// A line over the parser's limit in a sample is one invalid line: the lines after it
// are counted, and the whole file scaled from them.
func TestSampleLongLine(t *testing.T) {
	var b strings.Builder
	for i := range 100 {
		if i == 10 {
			b.WriteString(strings.Repeat("x", impression.MaxLineBytes+10) + "\n")
		}
		fmt.Fprintf(&b, `{"tenant":"acme","environmentName":"production","key":"u%d","split":"s","treatment":"on","time":%d}`+"\n",
			i, time.Date(2026, 1, 1, 5, 0, 0, 0, time.UTC).UnixMilli())
	}
	path := filepath.Join(t.TempDir(), "in.ndjson")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	est := newEstimate()
	targets := []route.Target{{ID: "acme-s3", Tenant: "acme"}}
	if err := est.sample(context.Background(), path, int64(b.Len()), targets, planOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := est.count("acme-s3", time.Time{}, time.Time{}); est.lines != 101 || got != 100 {
		t.Errorf("sampled %v lines, %d impressions for acme-s3; want 101 and 100", est.lines, got)
	}
}
