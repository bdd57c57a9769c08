package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	beamwindow "github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/textio"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/google/uuid"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/io/impressionio"
	"github.com/outflow/outflow/pipelines/internal/job"
	"github.com/outflow/outflow/pipelines/internal/sinks"
	"github.com/outflow/outflow/runners"
	"github.com/outflow/outflow/transforms/route"
	"github.com/outflow/outflow/transforms/windowing"
)

func init() {
	register.Combiner3[[]byte, impression.Impression, idSet](&distinctIDsFn{})
	register.Combiner1[idSet](&sumIDsFn{})
	register.DoFn2x2[string, idSet, string, idSet](&byIntegrationFn{})
	register.DoFn3x1[beam.Window, string, idSet, string](&lineFn{})
}

// recount runs the Beam job that sums up the distinct impressions of the input files
// matching glob, within r, per integration and window (count and digest), routed and
// windowed as the backfill does, and returns integration -> window -> ids. The job
// writes its result to a file in workDir, one line per window, which recount reads
// back and removes.
func recount(ctx context.Context, cfg *config.Config, glob string, r timeRange, workDir string) (map[string]map[window]idSet, error) {
	path := fmt.Sprintf("%s/verify-expected-%d.tsv", strings.TrimSuffix(workDir, "/"), time.Now().UnixNano())
	p, s := beam.NewPipelineWithRoot()
	var opts []impressionio.ReadOptionFn
	if !r.from.IsZero() {
		opts = append(opts, impressionio.Since(r.from))
	}
	if !r.to.IsZero() {
		opts = append(opts, impressionio.Until(r.to))
	}
	imps, _ := impressionio.Read(s, glob, opts...)
	// The header makes sure the file is written even when no window is expected.
	lines := []beam.PCollection{beam.Create(s, lineHeader)}
	for _, g := range sinks.Groups(cfg.Integrations) {
		if !g.Type.IsObjectStore() {
			continue
		}
		windowed := windowing.Fixed(s, g.Window, 0, route.Fanout(s, sinks.Targets(g.Integrations), imps))
		lines = append(lines, countWindows(s, windowed))
	}
	textio.Write(s, path, beam.Flatten(s, lines...))
	if _, err := runners.Run(ctx, p); err != nil {
		return nil, job.Failure(ctx, err)
	}
	defer removeFile(ctx, path)
	return readExpected(ctx, path)
}

// countWindows sums up the distinct impression ids of each integration and window:
// first per shard, where the copies of an impression meet, then per integration.
// Both steps are combines, so what crosses the shuffle is ids, not impressions.
//
// In: PCollection<KV<string, impression.Impression>> keyed by route.Key, in fixed
// windows; out: PCollection<string> of lines (formatLine), in the global window.
func countWindows(s beam.Scope, col beam.PCollection) beam.PCollection {
	s = s.Scope("verify.countWindows")
	perShard := beam.CombinePerKey(s, &distinctIDsFn{}, col)
	perIntegration := beam.CombinePerKey(s, &sumIDsFn{}, beam.ParDo(s, &byIntegrationFn{}, perShard))
	lines := beam.ParDo(s, &lineFn{}, perIntegration)
	return beam.WindowInto(s, beamwindow.NewGlobalWindows(), lines)
}

// distinctIDsFn sums up the distinct impressions of a shard. The accumulator is the
// ids, 16 bytes each, copies included; copies are dropped at the end.
type distinctIDsFn struct{}

func (distinctIDsFn) CreateAccumulator() []byte { return nil }

func (distinctIDsFn) AddInput(ids []byte, imp impression.Impression) []byte {
	return append(ids, imp.ID[:]...)
}

func (distinctIDsFn) MergeAccumulators(a, b []byte) []byte { return append(a, b...) }

func (distinctIDsFn) ExtractOutput(ids []byte) idSet {
	all := make([]uuid.UUID, len(ids)/len(uuid.UUID{}))
	for i := range all {
		copy(all[i][:], ids[i*len(uuid.UUID{}):])
	}
	slices.SortFunc(all, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	var set idSet
	for _, id := range slices.Compact(all) {
		set.add(id)
	}
	return set
}

// sumIDsFn adds up the shards of an integration's window: no id is in two shards.
type sumIDsFn struct{}

func (sumIDsFn) MergeAccumulators(a, b idSet) idSet { return a.plus(b) }

// byIntegrationFn keys a shard's ids by its integration.
type byIntegrationFn struct{}

func (byIntegrationFn) ProcessElement(key string, ids idSet) (string, idSet) {
	id, _ := route.SplitKey(key)
	return id, ids
}

// lineFn writes an integration's window as a line of the recount's result.
type lineFn struct{}

func (lineFn) ProcessElement(w beam.Window, id string, ids idSet) string {
	iw := w.(beamwindow.IntervalWindow)
	return formatLine(id, window{Start: int64(iw.Start), End: int64(iw.End)}, ids)
}

// The recount's result has one line per integration and window, fields separated by
// tabs: integration, window start and end (Unix ms), distinct impressions, digest.
// The header line may be anywhere in the file: textio keeps no order.
const lineHeader = "integration\twindow_start_ms\twindow_end_ms\tcount\tdigest"

func formatLine(id string, w window, ids idSet) string {
	return fmt.Sprintf("%s\t%d\t%d\t%d\t%s", id, w.Start, w.End, ids.Count, ids.Digest())
}

func parseLine(line string) (id string, w window, ids idSet, err error) {
	f := strings.Split(line, "\t")
	if len(f) != 5 {
		return "", w, ids, fmt.Errorf("%d fields, want 5", len(f))
	}
	start, err1 := strconv.ParseInt(f[1], 10, 64)
	end, err2 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil {
		return "", w, ids, fmt.Errorf("bad window %q-%q", f[1], f[2])
	}
	ids, err = parseIDSet(f[3], f[4])
	return f[0], window{Start: start, End: end}, ids, err
}

// readExpected reads the recount's result.
func readExpected(ctx context.Context, path string) (map[string]map[window]idSet, error) {
	fs, err := filesystem.New(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("read the recount's result: %w", err)
	}
	defer fs.Close()
	f, err := fs.OpenRead(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("read the recount's result %s (with workers on other machines, give --work-dir a location they share with verify): %w", path, err)
	}
	defer f.Close()
	out := map[string]map[window]idSet{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		if sc.Text() == lineHeader {
			continue
		}
		id, w, ids, err := parseLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("recount's result %s, line %d: %w", path, n, err)
		}
		if out[id] == nil {
			out[id] = map[window]idSet{}
		}
		out[id][w] = ids
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read the recount's result %s: %w", path, err)
	}
	return out, nil
}

// removeFile removes a file of the work directory, if its filesystem can.
func removeFile(ctx context.Context, path string) {
	fs, err := filesystem.New(ctx, path)
	if err != nil {
		return
	}
	defer fs.Close()
	if r, ok := fs.(filesystem.Remover); ok {
		r.Remove(ctx, path)
	}
}
