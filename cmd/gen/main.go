// Command gen writes deterministic impression files for demos, tests and benchmarks:
//
//	go run ./cmd/gen -n 1000000 -tenants 3 -seed 1 -files 8 -out /tmp/imps
//
// The same flags always give the same bytes.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/gzip"

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
	if err := write(*out, *files, *gz, gen.Options{N: *n, Tenants: *tenants, Seed: *seed,
		Start: t0, Span: *span, Invalid: *invalid, Dups: *dups}); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

// write spreads the generated lines over files, in consecutive runs.
func write(dir string, files int, gz bool, o gen.Options) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	per := (o.N + files - 1) / files
	var f *os.File
	var zw *gzip.Writer
	var bw *bufio.Writer
	closeFile := func() error {
		if f == nil {
			return nil
		}
		err := bw.Flush()
		if zw != nil {
			err = firstErr(err, zw.Close())
		}
		return firstErr(err, f.Close())
	}
	i := 0
	err := gen.Lines(o, func(line []byte, _ string) error {
		if i%per == 0 {
			if err := closeFile(); err != nil {
				return err
			}
			name := fmt.Sprintf("part-%03d.ndjson", i/per)
			if gz {
				name += ".gz"
			}
			var err error
			if f, err = os.Create(filepath.Join(dir, name)); err != nil {
				return err
			}
			bw = bufio.NewWriterSize(f, 256<<10)
			if gz {
				zw = gzip.NewWriter(f)
				bw.Reset(zw)
			}
		}
		i++
		bw.Write(line)
		return bw.WriteByte('\n')
	})
	return firstErr(err, closeFile())
}

func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
