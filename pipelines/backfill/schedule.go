package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/metricname"
	"github.com/outflow/outflow/internal/oplog"
	"github.com/outflow/outflow/internal/progress"
	"github.com/outflow/outflow/internal/report"
	"github.com/outflow/outflow/io/deadletterio"
	"github.com/outflow/outflow/io/impressionio"
	"github.com/outflow/outflow/pipelines/internal/job"
	"github.com/outflow/outflow/runners"
)

// runPlan runs the jobs in order, skipping those an earlier run finished, each in its
// pool's slots (parallel[pool] at a time; see poolOf), and records each in the report
// and the state. It returns the exit code: 1 if a job failed, else 3 if one
// dead-lettered, else 0.
func runPlan(ctx context.Context, log *slog.Logger, cfg *config.Config, glob string, files []impressionio.File, jobs []planJob, o planOptions,
	parallel [numPools]int, st *state, rep *report.Report, totalLines int64) (int, error) {
	mu := &reportMu // guards rep and the variables below
	var (
		failures   []string
		incomplete []string // jobs that ended holding impressions
		code       = job.ExitOK
		running    = map[string]*runningJob{}
	)
	stopProgress := showProgress(log, mu, running, totalLines)
	defer stopProgress()

	mu.Lock() // the planned jobs go in the report
	rep.Jobs = make([]report.Job, len(jobs))
	var todo []int // the jobs to run, in the plan's order
	for i, j := range jobs {
		rj := &rep.Jobs[i]
		*rj = report.Job{ID: j.ID, From: j.From, Until: j.Until, Estimate: j.Estimate, Status: "not_run"}
		for _, in := range j.Integrations {
			rj.Integrations = append(rj.Integrations, in.ID)
		}
		if d, ok := st.done(j.ID); ok {
			// What the earlier run did counts in this run's report and exit code.
			rj.Status, rj.PreviousStatus, rj.Finished = "skipped", d.Status, d.Finished
			rep.AddCounts(d.Counts)
			if d.Status == "dead_lettered" && code == job.ExitOK {
				code = job.ExitDeadLettered
			}
			log.Info("job done by an earlier run; skipped, its counts carried over", "job", j.ID, "status", d.Status)
			continue
		}
		todo = append(todo, i)
	}

	mu.Unlock()

	dispatch(ctx, todo, func(i int) (pool, []string) { return poolOf(jobs[i]), destinationsOf(jobs[i]) }, parallel, func(i int) func() {
		j, rj := jobs[i], &rep.Jobs[i]
		mu.Lock()
		rj.Started = time.Now()
		running[j.ID] = newRunningJob(j)
		mu.Unlock()
		log.Info("job starting", "job", j.ID, "pool", poolOf(j).String(), "estimated_impressions", j.Estimate)
		return func() {
			sub := *cfg
			sub.Integrations = slices.Clone(j.Integrations)
			for i := range sub.Integrations {
				sub.Integrations[i].Progress = j.ID
			}
			// Every job reads the files the plan matched, as they were then.
			opts := []impressionio.ReadOptionFn{impressionio.Exactly(files), impressionio.Progress(j.ID), impressionio.Since(o.From),
				impressionio.Until(o.Until), impressionio.Within(j.From, j.Until), impressionio.Shared(j.OwnLines, j.OwnRest)}
			run := receiptRun(j.ID)
			res, err := submit(ctx, j.ID, pipeline(&sub, glob, opts, run))
			counts, tally, terr := outcome(ctx, cfg.DeadLetter, run, res)
			heldAtEnd(counts, j)

			mu.Lock()
			defer mu.Unlock()
			delete(running, j.ID)
			rj.Finished = time.Now()
			rj.Seconds = rj.Finished.Sub(rj.Started).Seconds()
			rep.AddCounts(counts)
			live.finished(counts)
			rep.AddDistributionsAndGauges(res)
			var why string
			rj.Status, why = jobStatus(errors.Join(err, terr), counts, tally)
			switch rj.Status {
			case "failed":
				rj.Error = job.Failure(ctx, errors.Join(err, terr)).Error()
				failures = append(failures, j.ID+": "+rj.Error)
				code = job.ExitFailed
				log.Error("job failed", "job", j.ID, "error", rj.Error)
				return
			case "incomplete":
				// Not recorded as done, and the record kept: the rerun asked for redoes it.
				rj.Error = why
				incomplete = append(incomplete, j.ID)
				log.Error("job incomplete", "job", j.ID, "error", rj.Error)
				return
			case "dead_lettered":
				if code == job.ExitOK {
					code = job.ExitDeadLettered
				}
			}
			log.Info("job finished", "job", j.ID, "status", rj.Status, "seconds", fmt.Sprintf("%.1f", rj.Seconds))
			if err := st.markDone(ctx, j.ID, doneJob{Status: rj.Status, Finished: rj.Finished.UTC(), Counts: counts}); err != nil {
				log.Warn("could not record the finished job; a rerun will redo it", "job", j.ID, "error", err)
			}
		}
	})
	switch {
	case ctx.Err() != nil:
		return job.ExitFailed, fmt.Errorf("interrupted: %w; rerun the same command to resume", context.Cause(ctx))
	case failures != nil:
		return job.ExitFailed, fmt.Errorf("%d of %d jobs failed; rerun the same command to redo them:\n  %s",
			len(failures), len(jobs), strings.Join(failures, "\n  "))
	case incomplete != nil:
		log.Error("some jobs ended holding impressions they had neither delivered nor dead-lettered; rerun the same command to redo them",
			"jobs", strings.Join(incomplete, ","))
		return job.ExitDeadLettered, nil
	}
	// Complete: the record has served its purpose (resuming). Running the same
	// backfill again delivers it all again: objects are overwritten under the same
	// names, and HTTP destinations drop repeats by id.
	if err := st.remove(ctx); err != nil {
		log.Warn("could not remove the record of finished jobs; a rerun will report their counts without redoing them",
			"state", st.path, "error", err)
	}
	return code, nil
}

// heldAtEnd sets, in a finished job's counts, what each of its HTTP integrations
// still held (report.HeldAtEnd).
func heldAtEnd(counts report.Counts, j planJob) {
	for _, in := range j.Integrations {
		c := counts[in.ID]
		if in.Type.IsObjectStore() || c == nil {
			continue
		}
		c[metricname.Pending] = report.HeldAtEnd(c[metricname.Impressions], c[metricname.Delivered], c[metricname.DeadLettered])
	}
}

// jobStatus is how a finished job ended: failed (err), incomplete (the runner ended
// it while the delivery core still held impressions, e.g. its timers dropped: they
// are in no destination and no dead-letter file), dead_lettered or done; why says
// what was held.
func jobStatus(err error, counts report.Counts, tally deadletterio.Tally) (status, why string) {
	switch {
	case err != nil:
		return "failed", err.Error()
	case counts.Pending() > 0:
		return "incomplete", fmt.Sprintf("the job ended holding %d impressions it had neither delivered nor dead-lettered; rerun the same command to deliver them", counts.Pending())
	case tally.Impressions()+tally.FileErrors > 0:
		return "dead_lettered", ""
	}
	return "done", ""
}

// A pool is a class of jobs with slots of its own (--parallel-jobs,
// --parallel-http-jobs), so that no job waits for a slot held by a job of another
// class. A job delivering to an HTTP destination can take many minutes waiting on the
// destination's rate, its Retry-After and its retries, doing little meanwhile; with
// one pool for all, a few such jobs held every slot while the jobs writing objects,
// bound only by reading and uploading, waited behind them.
type pool int

const (
	objectPool pool = iota // jobs that only write objects (s3, gcs)
	httpPool               // jobs that deliver to an HTTP destination (amplitude, segment, webhook)
	numPools
)

func (p pool) String() string {
	if p == httpPool {
		return "http"
	}
	return "object"
}

// poolOf is the pool a job runs in. A plan's job never mixes object stores and HTTP
// destinations (object stores share a job of their own, an HTTP integration has one);
// were it to, the job would go to the HTTP pool: it finishes only when its HTTP
// destination has taken everything, so in the object pool it would hold an object
// slot for as long as that destination makes it wait.
func poolOf(j planJob) pool {
	if slices.ContainsFunc(j.Integrations, func(in config.Integration) bool { return !in.Type.IsObjectStore() }) {
		return httpPool
	}
	return objectPool
}

// dispatch starts the jobs todo (indices, in the plan's order), each as soon as its
// pool has a free slot, at most slots[p] at a time in pool p (0: no bound): within a
// pool, jobs start in the plan's order (largest first); a job waits only for jobs of
// its own pool, and a later job of another pool starts ahead of it. start is called
// in dispatch's goroutine as a job starts, and returns the job's work, which runs in a
// goroutine of its own. Once ctx is done no job starts; dispatch returns when every
// job started has ended.
//
// The jobs of one HTTP destination run one at a time: they would share its rate
// anyway, and with workers on several machines, two jobs at once would each pace
// themselves with a limiter of their own. So each HTTP destination has a slot of its
// own, and a destination that is slow or down holds up only its own jobs.
func dispatch(ctx context.Context, todo []int, classify func(i int) (pool, []string), slots [numPools]int, start func(i int) func()) {
	var wg sync.WaitGroup
	defer wg.Wait()
	free := slots
	free[objectPool] = max(1, free[objectPool])
	if free[httpPool] <= 0 {
		free[httpPool] = len(todo) // a slot per destination, whatever their number
	}
	busy := map[string]bool{} // HTTP destinations with a job running
	type end struct {
		p     pool
		dests []string
	}
	ended := make(chan end, len(todo)) // never blocks a job that ends
	pending := slices.Clone(todo)
	startable := func(i int) bool {
		p, dests := classify(i)
		return free[p] > 0 && !slices.ContainsFunc(dests, func(d string) bool { return busy[d] })
	}
	for len(pending) > 0 && ctx.Err() == nil {
		k := slices.IndexFunc(pending, startable)
		if k < 0 {
			select {
			case e := <-ended:
				free[e.p]++
				for _, d := range e.dests {
					delete(busy, d)
				}
			case <-ctx.Done():
			}
			continue
		}
		i := pending[k]
		p, dests := classify(i)
		pending = slices.Delete(pending, k, k+1)
		free[p]--
		for _, d := range dests {
			busy[d] = true
		}
		work := start(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { ended <- end{p, dests} }()
			work()
		}()
	}
}

// destinationsOf lists the HTTP destinations (integration ids) a job delivers to.
func destinationsOf(j planJob) []string {
	var ids []string
	for _, in := range j.Integrations {
		if !in.Type.IsObjectStore() {
			ids = append(ids, in.ID)
		}
	}
	return ids
}

// receiptRun names one execution of a job for its dead-letter receipts
// (deadletterio.Receipts): unique, so that another run's receipts never count.
func receiptRun(jobID string) string {
	h := sha256.Sum256([]byte(jobID))
	return fmt.Sprintf("backfill-%d-%s", time.Now().UnixNano(), hex.EncodeToString(h[:6]))
}

// outcome returns what a finished job did: its counters (from the runner's metrics),
// and what it wrote to the dead-letter store (its receipts), which decides its status
// whatever metrics the runner returns. Without metrics, the dead-letter counts come
// from the receipts.
func outcome(ctx context.Context, deadLetter, run string, res beam.PipelineResult) (report.Counts, deadletterio.Tally, error) {
	tally, err := deadletterio.ReadTally(ctx, deadLetter, run)
	if err != nil {
		return nil, tally, fmt.Errorf("count what the job dead-lettered: %w", err)
	}
	if err := deadletterio.ClearReceipts(ctx, deadLetter, run); err != nil {
		oplog.L().Warn("could not remove a job's dead-letter receipts", "dead_letter", deadLetter, "run", run, "error", err)
	}
	counts, ok := report.CountsOf(res)
	if !ok {
		counts = report.Counts{metricname.Job: {metricname.InvalidLines: tally.InvalidLines, metricname.FileErrors: tally.FileErrors}}
		for id, n := range tally.DeadLettered {
			counts[id] = map[string]int64{metricname.DeadLettered: n}
		}
	}
	return counts, tally, nil
}

// submitMu serializes submitting jobs: prism's job server (embedded, or started as
// one) keeps the artifacts of jobs being submitted in a map without a lock (Beam
// v2.77.0, jobservices/artifact.go), so two submissions at once can crash it. The
// next job is submitted once the previous one's workers have started (seen when they
// run in this process) or after submitWait (when they run elsewhere).
var submitMu sync.Mutex

// reportMu guards a backfill's report, and live, while its jobs run: --metrics-addr
// reads them.
var reportMu sync.Mutex

// live is what running jobs did so far, for --metrics-addr (liveCounts).
var live = liveCounts{accounted: map[[2]string]int64{}}

// liveCounts gives what the jobs still running did so far, as far as their workers
// run in this process: the process's live counters (metricname.Live) count every job,
// finished or not, and the finished jobs' share is in the report already.
type liveCounts struct{ accounted map[[2]string]int64 }

// finished takes a finished job's counts out of what runs.
func (l *liveCounts) finished(c report.Counts) {
	for ns, names := range c {
		for name, v := range names {
			l.accounted[[2]string{ns, name}] += v
		}
	}
}

// running is what the running jobs counted so far.
func (l *liveCounts) running() report.Counts {
	out := report.Counts{}
	for k, v := range metricname.Live() {
		if d := v - l.accounted[k]; d > 0 {
			out.Add(report.Counts{k[0]: {k[1]: d}})
		}
	}
	return out
}

const submitWait = 10 * time.Second

// submit runs p, submitting it only when no other job is being submitted.
func submit(ctx context.Context, id string, p *beam.Pipeline) (beam.PipelineResult, error) {
	type result struct {
		res beam.PipelineResult
		err error
	}
	submitMu.Lock()
	done := make(chan result, 1)
	go func() {
		res, err := runners.Run(ctx, p)
		done <- result{res, err}
	}()
	started := progress.StartedKey(id)
	for deadline := time.Now().Add(submitWait); progress.Get(started) == 0 && time.Now().Before(deadline); {
		select {
		case r := <-done:
			submitMu.Unlock()
			return r.res, r.err
		case <-time.After(10 * time.Millisecond):
		}
	}
	submitMu.Unlock()
	r := <-done
	return r.res, r.err
}

// runningJob is what the progress display knows of a job.
type runningJob struct {
	planJob
	started time.Time
}

func newRunningJob(j planJob) *runningJob {
	return &runningJob{planJob: j, started: time.Now()}
}

// doneOf sums what the job delivered or dead-lettered (seen when its workers run in
// this process).
func doneOf(j planJob) int64 {
	var n int64
	for _, in := range j.Integrations {
		n += progress.Get(progress.DoneKey(j.ID, in.ID))
	}
	return n
}

// showProgress prints, while jobs run, a line per running job: input read, impressions
// delivered or dead-lettered against the estimate, rate and time left. On a terminal
// it prints every 2 s; otherwise it logs every 10 s.
func showProgress(log *slog.Logger, mu *sync.Mutex, running map[string]*runningJob, totalLines int64) (stop func()) {
	terminal := isTerminal(os.Stdout)
	every := 10 * time.Second
	if terminal {
		every = 2 * time.Second
	}
	return job.Every(every, func() {
		mu.Lock()
		for id, r := range running {
			read := progress.Get(id)
			delivered := doneOf(r.planJob)
			secs := time.Since(r.started).Seconds()
			rate := float64(delivered) / secs
			eta := "?"
			if rate > 0 && r.Estimate > delivered {
				eta = (time.Duration(float64(r.Estimate-delivered)/rate) * time.Second).String()
			} else if r.Estimate <= delivered {
				eta = "0s"
			}
			if terminal {
				fmt.Printf("%s  %-40s read %3.0f%%  delivered or dead-lettered %d/~%d  %.0f/s  ETA %s\n", time.Now().Format("15:04:05"),
					id, pct(read, totalLines), delivered, r.Estimate, rate, eta)
			} else {
				log.Info("job progress", "job", id, "lines_read", read, "lines_estimated", totalLines,
					"delivered_or_dead_lettered", delivered, "estimated", r.Estimate, "per_second", int64(rate), "eta", eta)
			}
		}
		mu.Unlock()
	})
}

func pct(n, of int64) float64 {
	if of <= 0 {
		return 0
	}
	return min(100, 100*float64(n)/float64(of))
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// state records the jobs a backfill finished, with what each did, so that running the
// same backfill again after a crash, a failed job or Ctrl-C skips them, redoes the
// rest, and still reports the whole. It lives in the dead-letter store, under _state/,
// named by a hash of what defines the backfill: the configuration after ${VAR}
// expansion, the matched input files (path, size, modification time), the range and
// the slicing. A backfill that completes removes it.
type state struct {
	mu   sync.Mutex
	path string
	Done map[string]doneJob `json:"done"`
}

type doneJob struct {
	Status   string        `json:"status"` // done or dead_lettered
	Finished time.Time     `json:"finished"`
	Counts   report.Counts `json:"counts"`
}

func statePath(deadLetter string, key ...string) string {
	h := sha256.New()
	for _, k := range key {
		io.WriteString(h, k)
		h.Write([]byte{0})
	}
	return strings.TrimSuffix(deadLetter, "/") + "/_state/backfill-" + hex.EncodeToString(h.Sum(nil))[:16] + ".json"
}

// loadState reads the state at path; a missing file is an empty state.
func loadState(ctx context.Context, path string) (*state, error) {
	st := &state{path: path, Done: map[string]doneJob{}}
	fs, err := filesystem.New(ctx, path)
	if err != nil {
		return nil, err
	}
	defer fs.Close()
	if matches, err := fs.List(ctx, path); err != nil || len(matches) == 0 {
		return st, nil
	}
	rc, err := fs.OpenRead(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("read backfill state %s: %w", path, err)
	}
	defer rc.Close()
	if err := json.NewDecoder(rc).Decode(st); err != nil {
		return nil, fmt.Errorf("backfill state %s is damaged (%v); remove it or pass --restart", path, err)
	}
	return st, nil
}

func (s *state) done(id string) (doneJob, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.Done[id]
	return d, ok
}

// markDone records a finished job and writes the state, whole, to its file.
func (s *state) markDone(ctx context.Context, id string, d doneJob) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Done[id] = d
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	fs, err := filesystem.New(ctx, s.path)
	if err != nil {
		return err
	}
	defer fs.Close()
	return filesystem.Write(ctx, fs, s.path, b)
}

// remove deletes the state's file, if there is one.
func (s *state) remove(ctx context.Context) error {
	fs, err := filesystem.New(ctx, s.path)
	if err != nil {
		return err
	}
	defer fs.Close()
	if matches, err := fs.List(ctx, s.path); err != nil || len(matches) == 0 {
		return err
	}
	rm, ok := fs.(filesystem.Remover)
	if !ok {
		return fmt.Errorf("%s: the store cannot remove files", s.path)
	}
	return rm.Remove(ctx, s.path)
}
