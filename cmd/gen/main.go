// Command gen writes deterministic impression files for demos, tests and benchmarks:
//
//	go run ./cmd/gen -n 1000000 -tenants 3 -seed 1 -files 8 -out /tmp/imps
//
// The same flags always give the same bytes.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/outflow/outflow/internal/gen"
)

func main() {
	var (
		n       = flag.Int("n", 1000, "impressions (lines) to write")
		tenants = flag.Int("tenants", 3, "distinct tenants")
		seed    = flag.Uint64("seed", 1, "random seed")
		files   = flag.Int("files", 1, "number of files to spread the lines over")
		out     = flag.String("out", "", "directory to write part-NNN.ndjson[.gz] files into; required")
		gz      = flag.Bool("gzip", true, "gzip the files")
		invalid = flag.Float64("invalid", 0, "share of lines that are invalid (0..1)")
		dups    = flag.Float64("dups", 0, "share of lines that repeat an earlier impression (0..1)")
		start   = flag.String("start", gen.DefaultStart.Format(time.RFC3339), "time of the first impression (RFC 3339)")
		span    = flag.Duration("span", 24*time.Hour, "time the impressions span")
	)
	flag.Parse()
	t0, err := time.Parse(time.RFC3339, *start)
	if err != nil || *out == "" || *files < 1 || *n < 0 {
		fmt.Fprintln(os.Stderr, "gen: need -out DIR, -files >= 1, -n >= 0 and an RFC 3339 -start")
		os.Exit(2)
	}
	if err := gen.WriteFiles(*out, *files, *gz, gen.Options{N: *n, Tenants: *tenants, Seed: *seed,
		Start: t0, Span: *span, Invalid: *invalid, Dups: *dups}); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
