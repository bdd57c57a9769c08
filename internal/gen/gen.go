// Package gen generates deterministic impressions for samples, tests and benchmarks.
package gen

import (
	"bufio"
	"os"
	"path/filepath"

	"encoding/json"
	"fmt"
	"github.com/klauspost/compress/gzip"
	"github.com/outflow/outflow/transforms/encode"
	"math/rand/v2"
	"time"
)

// Options describe a generated data set. The same options always give the same lines.
type Options struct {
	N       int       // impressions
	Tenants int       // distinct tenants
	Seed    uint64    // random seed
	Start   time.Time // earliest impression time
	Span    time.Duration
	// Invalid is the share of lines that are not valid impressions, Dups the share of
	// lines that repeat an earlier impression.
	Invalid, Dups float64
}

// DefaultStart is the default first impression time: 2026-01-01T00:00:00Z.
var DefaultStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// TenantName returns the name of tenant i: a few familiar names, then t-NNN.
func TenantName(i int) string {
	names := []string{"acme", "globex", "initech", "umbrella", "hooli", "stark"}
	if i < len(names) {
		return names[i]
	}
	return fmt.Sprintf("t-%03d", i)
}

var (
	environments = []string{"production", "staging"}
	splits       = []string{"new_checkout", "dark_mode", "search_v2", "onboarding_flow", "pricing_page", "recommendations"}
	treatments   = []string{"on", "off", "control"}
	labels       = []string{"default rule", "in segment beta", "targeting rule", "killed"}
	sdks         = [][2]string{{"go", "6.7.0"}, {"javascript", "11.2.0"}, {"java", "4.13.0"}, {"python", "10.1.0"}}
)

// record is the JSON shape of a generated line: the webhook fields plus tenant.
type record struct {
	Tenant string `json:"tenant"`
	encode.Record
}

// Lines calls emit for each generated line (without its newline), in order, with its
// kind: "valid", "dup" (a repeat of an earlier valid line) or "invalid".
func Lines(o Options, emit func(line []byte, kind string) error) error {
	if o.Tenants < 1 {
		o.Tenants = 1
	}
	if o.Start.IsZero() {
		o.Start = DefaultStart
	}
	if o.Span <= 0 {
		o.Span = 24 * time.Hour
	}
	r := rand.New(rand.NewPCG(o.Seed, 0x6f7574666c6f77))
	var recent [][]byte // candidates for duplicates
	for i := 0; i < o.N; i++ {
		switch x := r.Float64(); {
		case x < o.Invalid:
			if err := emit(invalidLine(r, i), "invalid"); err != nil {
				return err
			}
			continue
		case x < o.Invalid+o.Dups && len(recent) > 0:
			if err := emit(recent[r.IntN(len(recent))], "dup"); err != nil {
				return err
			}
			continue
		}
		// Times increase through the data set, with jitter, like a real export.
		t := o.Start.Add(time.Duration(float64(o.Span) * (float64(i) + r.Float64()) / float64(o.N)))
		sdk := sdks[r.IntN(len(sdks))]
		env := r.IntN(len(environments))
		rec := record{Tenant: TenantName(r.IntN(o.Tenants)), Record: encode.Record{
			EnvironmentName:    environments[env],
			Key:                fmt.Sprintf("user-%d", r.IntN(50000)),
			Split:              splits[r.IntN(len(splits))],
			Treatment:          treatments[r.IntN(len(treatments))],
			Label:              labels[r.IntN(len(labels))],
			Time:               t.UnixMilli(),
			SplitVersionNumber: 1767000000000 + int64(r.IntN(5))*3600000,
			MachineName:        fmt.Sprintf("web-%d", r.IntN(20)),
			MachineIP:          fmt.Sprintf("10.1.%d.%d", r.IntN(4), r.IntN(250)),
			SDK:                sdk[0],
			SDKVersion:         sdk[1],
		}}
		rec.EnvironmentID = fmt.Sprintf("env-%s-%d", rec.EnvironmentName, env+1)
		if r.IntN(4) == 0 {
			rec.BucketingKey = fmt.Sprintf("account-%d", r.IntN(1000))
		}
		if r.IntN(3) == 0 {
			rec.Properties = fmt.Sprintf(`{"plan":"%s"}`, []string{"free", "pro", "enterprise"}[r.IntN(3)])
		}
		line, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		if len(recent) < 64 {
			recent = append(recent, line)
		} else {
			recent[r.IntN(len(recent))] = line
		}
		if err := emit(line, "valid"); err != nil {
			return err
		}
	}
	return nil
}

// invalidLine returns one of a few kinds of bad input.
func invalidLine(r *rand.Rand, i int) []byte {
	switch r.IntN(4) {
	case 0:
		return []byte(`{"tenant":"acme","environmentName":"production","key":"user-1","split":"x","treatment":"on"`) // truncated
	case 1:
		return []byte(fmt.Sprintf(`{"tenant":"acme","environmentName":"production","split":"x","treatment":"on","time":%d}`, i)) // no key
	case 2:
		return []byte(`{"tenant":"acme","environmentName":"production","key":"user-2","split":"x","treatment":"on","time":1.5e12}`)
	default:
		return []byte("not json at all")
	}
}

// WriteFiles writes the lines of o into dir as part-NNN.ndjson[.gz], spread over
// files in consecutive runs.
func WriteFiles(dir string, files int, gz bool, o Options) error {
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
	err := Lines(o, func(line []byte, _ string) error {
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
