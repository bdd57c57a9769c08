// Command verify checks that the object stores hold exactly what delivering the input
// should have put there:
//
//	verify --config CONFIG --input GLOB [--since RFC3339] [--until RFC3339] [--all] [--out FILE] [--work-dir DIR]
//
// plus Beam's runner flags. A Beam job recounts the input (recount.go): per
// integration and window, as the backfill routes and windows them, how many distinct
// impressions and a digest of their ids. Then verify reads every data object of each
// S3 and GCS integration back and sums up the same per window (inventory.go), and
// gives each window a status (compare.go): ok, MISSING, SHORT, WRONG, UNEXPECTED or
// DUPLICATED. It exits 0 only when every window matches (3 when some do not, 2 on bad
// flags or config, 1 when it could not check).
//
// HTTP destinations are not checked: they keep no record outflow could read back.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/pipelines/internal/job"
	"github.com/outflow/outflow/pipelines/internal/sinks"
	"github.com/outflow/outflow/runners"
)

var (
	configPath = flag.String("config", "", "configuration file (YAML, CONTRACT §2); required")
	input      = flag.String("input", "", "impression files, as given to the backfill; required")
	since      = flag.String("since", "", "check only impressions at or after this time (RFC 3339)")
	until      = flag.String("until", "", "check only impressions before this time (RFC 3339)")
	all        = flag.Bool("all", false, "print every window, not only those that differ")
	out        = flag.String("out", "", "also write every window's comparison to this file, as JSON lines")
	workDir    = flag.String("work-dir", "", "where the recount job writes its result for verify to read "+
		"(default: a new local temporary directory, removed at the end); with workers on other machines, "+
		"a location they share with verify: gs://bucket/path or s3://bucket/path")
)

const usage = "usage: verify --config CONFIG --input GLOB [--since RFC3339] [--until RFC3339] [--all] [--out FILE] [--work-dir DIR] [runner flags]"

func main() { os.Exit(run()) }

func run() int {
	flag.Usage = func() { fmt.Fprintln(os.Stderr, usage); fmt.Fprintln(os.Stderr, runners.FlagsHelp) }
	flag.Parse()
	beam.Init()
	if code, served := job.ServeWorkers("verify"); served {
		return code
	}
	log := job.Logger()

	var problems []string
	if *input == "" {
		problems = append(problems, "--input is required")
	}
	r := timeRange{from: parseTime("since", *since, &problems), to: parseTime("until", *until, &problems)}
	if scheme, _, ok := strings.Cut(*workDir, "://"); ok && scheme != "gs" && scheme != "s3" {
		problems = append(problems, fmt.Sprintf("--work-dir: %q is not a local directory, gs://… or s3://…", *workDir))
	}
	problems = append(problems, runners.FlagProblems()...)
	cfg := job.LoadConfig(*configPath, &problems)
	if len(problems) > 0 {
		return job.UsageError("verify", usage, problems)
	}
	ctx, stop := job.Context()
	defer stop()

	dir := *workDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "outflow-verify-")
		if err != nil {
			fmt.Fprintf(os.Stderr, "verify: work directory: %v\n", err)
			return job.ExitFailed
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	expected, err := recount(ctx, cfg, *input, r, dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "verify: %v\n", err)
		return job.ExitFailed
	}
	var rows []row
	for _, t := range sinks.ObjectTargets(cfg, cfg.Integrations) {
		in := integration(cfg, t.ID)
		found, err := inventory(ctx, log, in, t, r)
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
	bad := printRows(os.Stdout, rows, *all)
	if *out != "" {
		if err := writeRows(*out, rows); err != nil {
			fmt.Fprintf(os.Stderr, "verify: --out: %v\n", err)
			return job.ExitFailed
		}
	}
	if bad > 0 {
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

func integration(cfg *config.Config, id string) config.Integration {
	for _, in := range cfg.Integrations {
		if in.ID == id {
			return in
		}
	}
	return config.Integration{}
}
