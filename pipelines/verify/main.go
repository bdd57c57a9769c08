// Command verify checks that the object stores hold exactly what delivering the input
// should have put there:
//
//	verify --config CONFIG --input GLOB [--since RFC3339] [--until RFC3339]
//
// plus Beam's runner flags. A Beam job recounts the input: unique impressions per
// integration and window, as the backfill routes and windows them. Then verify reads
// every data object of each S3 and GCS integration and counts what it holds. It
// prints the windows that are missing, short, duplicated or hold impressions they
// should not, and exits 0 only when every window matches (3 when some do not, 2 on
// bad flags or config, 1 when it could not check).
//
// HTTP destinations are not checked: they keep no record outflow could read back.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	beamwindow "github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/google/uuid"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/io/impressionio"
	"github.com/outflow/outflow/io/objectio"
	"github.com/outflow/outflow/pipelines/internal/job"
	"github.com/outflow/outflow/runners"
	"github.com/outflow/outflow/transforms/encode"
	"github.com/outflow/outflow/transforms/route"
	"github.com/outflow/outflow/transforms/windowing"
)

var (
	configPath = flag.String("config", "", "configuration file (YAML, CONTRACT §2); required")
	input      = flag.String("input", "", "impression files, as given to the backfill; required")
	since      = flag.String("since", "", "check only impressions at or after this time (RFC 3339)")
	until      = flag.String("until", "", "check only impressions before this time (RFC 3339)")
	all        = flag.Bool("all", false, "print every window, not only those that differ")
)

const usage = "usage: verify --config CONFIG --input GLOB [--since RFC3339] [--until RFC3339] [--all] [runner flags]"

func main() { os.Exit(run()) }

func run() int {
	flag.Usage = func() { fmt.Fprintln(os.Stderr, usage); fmt.Fprintln(os.Stderr, runners.FlagsHelp) }
	flag.Parse()
	beam.Init()
	log := job.Logger()

	var problems []string
	if *input == "" {
		problems = append(problems, "--input is required")
	}
	from, to := parseTime("since", *since, &problems), parseTime("until", *until, &problems)
	cfg := job.LoadConfig(*configPath, &problems)
	if len(problems) > 0 {
		return job.UsageError("verify", usage, problems)
	}
	ctx, stop := job.Context()
	defer stop()

	expected, err := recount(ctx, cfg, from, to)
	if err != nil {
		fmt.Fprintf(os.Stderr, "verify: %v\n", err)
		return job.ExitFailed
	}
	var rows []row
	for _, t := range config.ObjectTargets(cfg, cfg.Integrations) {
		found, err := inventory(ctx, log, cfg, t, from, to)
		if err != nil {
			fmt.Fprintf(os.Stderr, "verify: integration %q: %v\n", t.ID, err)
			return job.ExitFailed
		}
		rows = append(rows, compare(t.ID, expected[t.ID], found)...)
	}
	for _, in := range cfg.Integrations {
		if !in.Type.IsObjectStore() {
			fmt.Printf("%s (%s): not checked; HTTP destinations keep nothing verify could read back\n", in.ID, in.Type)
		}
	}
	if printRows(os.Stdout, rows, *all) > 0 {
		return job.ExitDeadLettered // "finished, but": some windows differ
	}
	return job.ExitOK
}

func parseTime(name, v string, problems *[]string) time.Time {
	if v == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		*problems = append(*problems, fmt.Sprintf("--%s: %q is not an RFC 3339 time", name, v))
	}
	return t
}

// windowKey names a window in counter names and comparisons: start and end, Unix ms.
func windowKey(start, end time.Time) string {
	return strconv.FormatInt(start.UnixMilli(), 10) + "-" + strconv.FormatInt(end.UnixMilli(), 10)
}

// recount runs the Beam job that counts the input's unique impressions per
// integration and window, and returns integration -> window -> count.
func recount(ctx context.Context, cfg *config.Config, from, to time.Time) (map[string]map[string]int64, error) {
	p, s := beam.NewPipelineWithRoot()
	var opts []impressionio.ReadOptionFn
	if !from.IsZero() {
		opts = append(opts, impressionio.Since(from))
	}
	if !to.IsZero() {
		opts = append(opts, impressionio.Until(to))
	}
	imps, _ := impressionio.Read(s, *input, opts...)
	for _, g := range windowing.Groups(cfg.Integrations) {
		if !g.Type.IsObjectStore() {
			continue
		}
		windowed := windowing.Fixed(s, g.Window, 0, route.Fanout(s, config.Targets(g.Integrations), imps))
		beam.ParDo0(s, &countFn{}, encode.Objects(s, encode.Binary, windowed))
	}
	res, err := runners.Run(ctx, p)
	if err != nil {
		return nil, job.Failure(ctx, err)
	}
	out := map[string]map[string]int64{}
	for _, c := range res.Metrics().AllMetrics().Counters() {
		w, ok := strings.CutPrefix(c.Name(), windowCounter)
		if !ok {
			continue
		}
		if out[c.Namespace()] == nil {
			out[c.Namespace()] = map[string]int64{}
		}
		out[c.Namespace()][w] += c.Result()
	}
	return out, nil
}

const windowCounter = "verify.window/"

func init() {
	register.DoFn4x1[context.Context, beam.Window, string, encode.Chunk, error](&countFn{})
}

// countFn counts a shard's unique impressions of a window in a counter named after
// the window, in the integration's namespace: the job's metrics are its result.
type countFn struct{}

func (countFn) ProcessElement(ctx context.Context, w beam.Window, key string, c encode.Chunk) error {
	dups, err := c.Each(func([]byte) error { return nil })
	if err != nil {
		return err
	}
	id, _ := route.SplitKey(key)
	iw := w.(beamwindow.IntervalWindow)
	beam.NewCounter(id, windowCounter+windowKey(iw.Start.ToTime(), iw.End.ToTime())).Inc(ctx, int64(c.N-dups))
	return nil
}

// held is what a store holds for one window.
type held struct {
	records  int64 // records in the window's objects
	unique   int64
	strays   int64 // records outside the window they are filed under, or of another integration
	objects  int
	inWindow map[uuid.UUID]bool
}

// inventory reads every data object of an integration and counts what each window holds.
func inventory(ctx context.Context, log *slog.Logger, cfg *config.Config, t objectio.Target, from, to time.Time) (map[string]*held, error) {
	store, err := objectio.NewStore(ctx, t.Kind, t.Settings)
	if err != nil {
		return nil, err
	}
	reader, ok := store.(objectio.Reader)
	if !ok {
		return nil, fmt.Errorf("the %s store cannot be read back", t.Kind)
	}
	prefix := t.Spec.Prefix
	if prefix != "" {
		prefix += "/"
	}
	keys, err := reader.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	tenant := tenantOf(cfg, t.ID)
	out := map[string]*held{}
	for _, key := range keys {
		name, ok := t.Spec.ParseKey(strings.TrimPrefix(key, prefix))
		if !ok || name.Integration != t.ID {
			continue // not one of this integration's data objects
		}
		if (!from.IsZero() && name.End.Before(from)) || (!to.IsZero() && !name.Start.Before(to)) {
			continue // outside the range checked
		}
		recs, err := readObject(ctx, reader, key, t.Spec.Format)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", store.Where(key), err)
		}
		w := windowKey(name.Start, name.End)
		h := out[w]
		if h == nil {
			h = &held{inWindow: map[uuid.UUID]bool{}}
			out[w] = h
		}
		h.objects++
		for _, r := range recs {
			h.records++
			imp := impression.Impression{Tenant: tenant, EnvironmentID: r.EnvironmentID, EnvironmentName: r.EnvironmentName,
				Key: r.Key, BucketingKey: r.BucketingKey, Split: r.Split, Treatment: r.Treatment, Label: r.Label,
				Time: r.Time, SplitVersionNumber: r.SplitVersionNumber}
			if tm := time.UnixMilli(r.Time); tm.Before(name.Start) || !tm.Before(name.End) {
				h.strays++
			}
			if id := imp.ComputeID(); !h.inWindow[id] {
				h.inWindow[id] = true
				h.unique++
			}
		}
		log.Debug("object read", "object", store.Where(key), "records", len(recs))
	}
	return out, nil
}

func readObject(ctx context.Context, r objectio.Reader, key string, f encode.Format) ([]encode.Record, error) {
	body, err := r.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return encode.ReadObject(body, f)
}

func tenantOf(cfg *config.Config, id string) string {
	for _, in := range cfg.Integrations {
		if in.ID == id {
			return in.Tenant
		}
	}
	return ""
}

// row is one window's comparison.
type row struct {
	integration, window       string
	expected, records, unique int64
	objects                   int
	status                    string
}

func compare(id string, expected map[string]int64, found map[string]*held) []row {
	windows := map[string]bool{}
	for w := range expected {
		windows[w] = true
	}
	for w := range found {
		windows[w] = true
	}
	var rows []row
	for w := range windows {
		r := row{integration: id, window: w, expected: expected[w], status: "ok"}
		strays := int64(0)
		if h := found[w]; h != nil {
			r.records, r.unique, r.objects, strays = h.records, h.unique, h.objects, h.strays
		}
		switch {
		case r.records == 0 && r.expected > 0:
			r.status = "MISSING"
		case r.unique < r.expected:
			r.status = "SHORT"
		case r.records > r.unique:
			r.status = "DUPLICATED"
		case r.unique > r.expected || strays > 0:
			r.status = "UNEXPECTED"
		}
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].window < rows[j].window })
	return rows
}

// printRows writes the table and returns how many windows differ.
func printRows(w io.Writer, rows []row, all bool) int {
	bad := 0
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "integration\twindow\texpected\tfound\tunique\tobjects\tstatus")
	for _, r := range rows {
		if r.status != "ok" {
			bad++
		}
		if r.status == "ok" && !all {
			continue
		}
		start, end, _ := strings.Cut(r.window, "-")
		s, _ := strconv.ParseInt(start, 10, 64)
		e, _ := strconv.ParseInt(end, 10, 64)
		fmt.Fprintf(tw, "%s\t%s/%v\t%d\t%d\t%d\t%d\t%s\n", r.integration, time.UnixMilli(s).UTC().Format(time.RFC3339),
			time.Duration(e-s)*time.Millisecond, r.expected, r.records, r.unique, r.objects, r.status)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d windows checked, %d differ\n", len(rows), bad)
	return bad
}
