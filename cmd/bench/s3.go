package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/outflow/outflow/internal/gen"
	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/s3server"
	"github.com/outflow/outflow/transforms/encode"
)

// The s3 mode's targets (issue 14): the backfill at half the plain loop's rate or
// more, ten times Benthos' rate on the same job (17,044/s, measured on this machine
// with Benthos v4.63.1: file → per-tenant gzip objects), and a peak RSS no higher
// than 600 MiB per million impressions.
const (
	targetLoopRatio   = 0.5
	benthosRate       = 17044.0
	targetBenthosX    = 10
	targetRSSPerMilMB = 600
)

// s3Integration is one integration of the s3 bench: all of a tenant's impressions in
// one format.
type s3Integration struct {
	id, tenant string
	format     encode.Format
}

// s3Integrations is the bench's configuration: an NDJSON integration per tenant,
// and a CSV one for the first tenant, so formats differ as users' do.
func s3Integrations(tenants int) []s3Integration {
	var out []s3Integration
	for i := range tenants {
		t := gen.TenantName(i)
		out = append(out, s3Integration{t + "-s3", t, encode.NDJSON})
	}
	return append(out, s3Integration{gen.TenantName(0) + "-csv", gen.TenantName(0), encode.CSV})
}

// s3Round is one round's figures of one program.
type s3Round struct {
	rate   float64 // impressions/s
	cpuSec float64 // CPU seconds per million impressions
	rssMiB float64
}

// benchS3 times, in each of rounds rounds, a plain Go loop (the machine's practical
// limit: parse, validate, re-encode and gzip per integration on every core, no Beam)
// and the backfill on the embedded prism runner writing to an S3 API server on
// loopback, over the same n impressions in files files, half of them gzipped. It
// checks the backfill delivered what the loop counted, and prints medians, ranges and
// the targets.
func benchS3(n, files, tenants, rounds int, endpoint, dir string, backfillArgs []string, jobServer int) error {
	input := filepath.Join(dir, "input")
	fmt.Printf("generating %d impressions, %d tenants, in %d files (half gzip)…\n", n, tenants, files)
	if err := gen.WriteFiles(input, files, true, gen.Options{N: n, Tenants: tenants, Seed: 1}); err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	if err := gunzipEveryOther(input); err != nil {
		return err
	}
	glob := filepath.Join(input, "part-*")
	bin := filepath.Join(dir, "backfill")
	if err := command("go", "build", "-o", bin, "./pipelines/backfill").Run(); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	integrations := s3Integrations(tenants)

	if endpoint == "" {
		srv, err := s3server.Start("")
		if err != nil {
			return err
		}
		defer srv.Close()
		endpoint = srv.Endpoint
		if err := srv.CreateBucket("bench"); err != nil {
			return err
		}
		for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"} {
			if os.Getenv(k) == "" {
				os.Setenv(k, v)
			}
		}
	}
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	// Each round writes into prefixes of its own: a prefix that holds the impressions
	// already is only checked, not written (see the rerun below).
	config := func(round int) (string, error) {
		cfg := filepath.Join(dir, fmt.Sprintf("bench-%d.yaml", round))
		var sb strings.Builder
		fmt.Fprintf(&sb, "dead_letter: %s\nintegrations:\n", filepath.Join(dir, "dead-letter"))
		for _, in := range integrations {
			fmt.Fprintf(&sb, "  - {id: %s, tenant: %s, type: s3, s3: {bucket: bench, prefix: r%d/%s, format: %s, endpoint: %q}}\n",
				in.id, in.tenant, round, in.id, in.format, endpoint)
		}
		return cfg, os.WriteFile(cfg, []byte(sb.String()), 0o644)
	}

	// backfill runs the backfill of total impressions with cfg and extra flags, checks
	// that each integration holds what the loop counted, and returns its round and what
	// its report says it wrote and found stored.
	backfill := func(cfg, report string, counts map[string]int, total int, extra []string) (br s3Round, objects, before int, err error) {
		var args []string
		if addr := os.Getenv("OUTFLOW_BENCH_METRICS_ADDR"); addr != "" {
			args = append(args, "--metrics-addr", addr) // for profiling: /debug/pprof
		}
		args = append(args, extra...)
		jobServerCPU := processCPU(jobServer)
		p, err := startBackfill(bin, cfg, glob, report, args...)
		if err != nil {
			return br, 0, 0, err
		}
		res := p.wait(0)
		if len(extra) > 0 {
			res.cpu += processCPU(jobServer) - jobServerCPU // the runner's share, if it runs apart
		}
		if res.err != nil || res.code != 0 {
			return br, 0, 0, fmt.Errorf("backfill %s: exit %s: %v\n%s", strings.Join(extra, " "), res.exitString(), res.err, p.out.Bytes())
		}
		if objects, before, err = checkStored(report, counts); err != nil {
			return br, 0, 0, err
		}
		br = s3Round{rate: float64(total) / res.elapsed.Seconds(),
			cpuSec: res.cpu.Seconds() * 1e6 / float64(total), rssMiB: float64(res.rssKiB) / 1024}
		fmt.Printf("  backfill %s%.0f/s (%.1fs, %.1f CPU-s per million, %.0f MiB peak RSS); each integration delivered what the loop counted\n",
			strings.Join(append(extra, ""), " "), br.rate, res.elapsed.Seconds(), br.cpuSec, br.rssMiB)
		return br, objects, before, nil
	}

	var loop, beam, other []s3Round
	var rerun s3Round // the last round's backfill again, into the prefixes it filled
	for r := range rounds + 1 {
		cfg, err := config(min(r, rounds-1))
		if err != nil {
			return err
		}
		if r < rounds {
			fmt.Printf("round %d of %d…\n", r+1, rounds)
		} else {
			fmt.Printf("the last round's backfill again, into the prefixes it filled…\n")
		}
		lr, counts, err := plainLoop(glob, integrations)
		if err != nil {
			return err
		}
		fmt.Printf("  plain loop %.0f/s\n", lr.rate)
		total := 0
		for _, c := range counts {
			total += c
		}
		total -= counts[integrations[len(integrations)-1].id] // the CSV copy is not another impression
		br, objects, before, err := backfill(cfg, filepath.Join(dir, fmt.Sprintf("report-%d.json", r)), counts, total, nil)
		if err != nil {
			return err
		}
		if r == rounds {
			if objects != 0 || before != total+counts[integrations[len(integrations)-1].id] {
				return fmt.Errorf("the same backfill again wrote %d objects, and found %d impressions stored before of %d", objects, before, total)
			}
			rerun = br
			break
		}
		loop, beam = append(loop, lr), append(beam, br)
		if len(backfillArgs) > 0 { // the same round on the other runner, into prefixes of its own
			cfg, err := config(rounds + 1 + r)
			if err != nil {
				return err
			}
			or, _, _, err := backfill(cfg, filepath.Join(dir, fmt.Sprintf("report-other-%d.json", r)), counts, total, backfillArgs)
			if err != nil {
				return err
			}
			other = append(other, or)
		}
	}

	fmt.Printf("\n%d impressions, %d integrations (%d NDJSON, 1 CSV), %d files, %d rounds, %d cores\n",
		n, len(integrations), tenants, files, rounds, runtime.NumCPU())
	fmt.Printf("%-58s %-30s %-16s %s\n", "program", "impressions/s median (range)", "CPU-s/million", "peak RSS MiB")
	show := func(name string, rs []s3Round, rss bool) {
		rate, cpu, mem := stat(rs, func(r s3Round) float64 { return r.rate }),
			stat(rs, func(r s3Round) float64 { return r.cpuSec }), stat(rs, func(r s3Round) float64 { return r.rssMiB })
		m := "-"
		if rss {
			m = fmt.Sprintf("%.0f (%.0f–%.0f)", mem[1], mem[0], mem[2])
		}
		fmt.Printf("%-58s %-30s %-16s %s\n", name, fmt.Sprintf("%.0f (%.0f–%.0f)", rate[1], rate[0], rate[2]),
			fmt.Sprintf("%.1f (%.1f–%.1f)", cpu[1], cpu[0], cpu[2]), m)
	}
	show(fmt.Sprintf("plain loop, %d goroutines: parse, encode, gzip", runtime.GOMAXPROCS(0)), loop, false)
	show("backfill, embedded prism, S3 API server on loopback", beam, true)
	show("the same backfill again: every impression stored already", []s3Round{rerun}, true)
	if len(other) > 0 {
		show("backfill "+strings.Join(backfillArgs, " "), other, true)
	}

	var ratios []float64
	for i := range beam {
		ratios = append(ratios, beam[i].rate/loop[i].rate)
	}
	slices.Sort(ratios)
	beamRate := stat(beam, func(r s3Round) float64 { return r.rate })[1]
	rssPerMil := stat(beam, func(r s3Round) float64 { return r.rssMiB })[1] * 1e6 / float64(n)
	if jobServer != 0 {
		fmt.Printf("job server (pid %d): peak RSS %.0f MiB since it started; its CPU is counted in that runner's backfill above\n",
			jobServer, processPeakRSS(jobServer))
	}
	fmt.Printf("\ntargets:\n")
	verdict := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "MISS"
	}
	fmt.Printf("  backfill / plain loop, same round: median %.2f (%.2f–%.2f), target >= %.1f: %s\n",
		ratios[len(ratios)/2], ratios[0], ratios[len(ratios)-1], targetLoopRatio, verdict(ratios[len(ratios)/2] >= targetLoopRatio))
	fmt.Printf("  backfill / Benthos (%.0f/s, measured earlier): %.1f×, target >= %d×: %s\n",
		benthosRate, beamRate/benthosRate, targetBenthosX, verdict(beamRate >= targetBenthosX*benthosRate))
	fmt.Printf("  peak RSS per million impressions: %.0f MiB, target <= %d: %s\n",
		rssPerMil, targetRSSPerMilMB, verdict(rssPerMil <= targetRSSPerMilMB))
	return nil
}

// stat returns the min, median and max of f over rs.
func stat(rs []s3Round, f func(s3Round) float64) [3]float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	return [3]float64{v[0], v[len(v)/2], v[len(v)-1]}
}

// gunzipEveryOther turns every other gzip file of dir into a plain one, so the input
// mixes both as exports do.
func gunzipEveryOther(dir string) error {
	paths, err := filepath.Glob(filepath.Join(dir, "*.gz"))
	if err != nil {
		return err
	}
	slices.Sort(paths)
	for i := 1; i < len(paths); i += 2 {
		in, err := os.Open(paths[i])
		if err != nil {
			return err
		}
		zr, err := gzip.NewReader(in)
		if err != nil {
			in.Close()
			return err
		}
		out, err := os.Create(strings.TrimSuffix(paths[i], ".gz"))
		if err == nil {
			_, err = io.Copy(out, zr)
			err = firstErr(err, out.Close())
		}
		in.Close()
		if err != nil {
			return err
		}
		if err := os.Remove(paths[i]); err != nil {
			return err
		}
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// checkStored compares the backfill's report with the impressions the loop counted
// per integration, and returns how many objects the run wrote and how many of the
// delivered impressions were stored before it.
func checkStored(path string, want map[string]int) (objects, before int, err error) {
	var r struct {
		Integrations []struct {
			ID           string `json:"id"`
			Delivered    int    `json:"delivered"`
			Objects      int    `json:"objects"`
			StoredBefore int    `json:"stored_before"`
		} `json:"integrations"`
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return 0, 0, fmt.Errorf("%s: %w", path, err)
	}
	got := map[string]int{}
	for _, in := range r.Integrations {
		got[in.ID] = in.Delivered
		objects, before = objects+in.Objects, before+in.StoredBefore
	}
	for id, n := range want {
		if got[id] != n {
			return 0, 0, fmt.Errorf("integration %s: the backfill delivered %d impressions, the loop found %d", id, got[id], n)
		}
	}
	return objects, before, nil
}

// plainLoop is the ceiling: the files read, parsed, validated, encoded per
// integration and gzipped in chunks of 64 KiB (as the pipeline compresses them), on
// GOMAXPROCS goroutines taking files in turn, with nothing else. It returns its
// figures and the impressions each integration got.
func plainLoop(glob string, integrations []s3Integration) (s3Round, map[string]int, error) {
	paths, err := filepath.Glob(glob)
	if err != nil {
		return s3Round{}, nil, err
	}
	byTenant := map[string][]int{}
	for i, in := range integrations {
		byTenant[in.tenant] = append(byTenant[in.tenant], i)
	}
	type sink struct {
		zw    *gzip.Writer
		buf   []byte
		count int
	}
	var next atomic.Int64
	workers := runtime.GOMAXPROCS(0)
	counts := make([][]int, workers)
	errs := make([]error, workers)
	cpu0 := cpuTime()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sinks := make([]*sink, len(integrations))
			for i := range integrations {
				sinks[i] = &sink{zw: gzip.NewWriter(io.Discard)}
			}
			for {
				i := int(next.Add(1)) - 1
				if i >= len(paths) {
					break
				}
				if errs[w] = loopFile(paths[i], func(imp *impression.Impression) {
					for _, j := range byTenant[imp.Tenant] {
						s := sinks[j]
						s.count++
						if s.buf = encode.Append(integrations[j].format, s.buf, imp); len(s.buf) >= 64<<10 {
							s.zw.Write(s.buf)
							s.buf = s.buf[:0]
						}
					}
				}); errs[w] != nil {
					return
				}
			}
			counts[w] = make([]int, len(integrations))
			for i, s := range sinks {
				s.zw.Write(s.buf)
				s.zw.Close()
				counts[w][i] = s.count
			}
		}()
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	if err := firstErr(errs...); err != nil {
		return s3Round{}, nil, err
	}
	perIntegration := map[string]int{}
	total := 0
	for _, c := range counts {
		for i, n := range c {
			perIntegration[integrations[i].id] += n
		}
	}
	for _, in := range integrations {
		if in.format == encode.NDJSON {
			total += perIntegration[in.id]
		}
	}
	return s3Round{rate: float64(total) / elapsed.Seconds(), cpuSec: cpu.Seconds() * 1e6 / float64(total)}, perIntegration, nil
}

// loopFile calls f with each valid impression of the file at path.
func loopFile(path string, f func(*impression.Impression)) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	var r io.Reader = file
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(file)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		r = zr
	}
	br := bufio.NewReaderSize(r, 256<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if imp, perr := impression.Parse(line); perr == nil {
				f(&imp)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
}

// processCPU is the user and system CPU time process pid has used (0 for pid 0, or one
// that cannot be read).
func processCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command's closing parenthesis: utime and stime are the 12th and
	// 13th, in clock ticks (100 a second on Linux).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// processPeakRSS is process pid's peak resident set (VmHWM) in MiB, 0 if unknown.
func processPeakRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kib, _ := strconv.ParseFloat(f[1], 64)
			return kib / 1024
		}
	}
	return 0
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
