package deadletterio

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem"
)

// Receipts make a job's exit code depend on what it wrote to the store rather than on
// runner metrics, which the universal runner may not return. A launcher picks a run id
// unique to one execution of one job, passes Receipts(run) to Write, and once the job
// has finished reads ReadTally(ctx, uri, run), then ClearReceipts(ctx, uri, run):
//
//	run := "backfill-" + time.Now().UTC().Format("20060102T150405Z") + "-" + jobID
//	deadletterio.Write(s, cfg.DeadLetter, records, deadletterio.Receipts(run))
//	// … run the pipeline …
//	t, err := deadletterio.ReadTally(ctx, cfg.DeadLetter, run)
//	if err != nil { … the counts are unknown: fail rather than claim success … }
//	if t.Impressions() > 0 { code = job.ExitDeadLettered }
//	_ = deadletterio.ClearReceipts(ctx, cfg.DeadLetter, run)
//
// A receipt is "<uri>/_receipts/<run>/<digest of the file's name>.json", written
// after the dead-letter file it describes and named after it, so a retried bundle
// overwrites both instead of counting twice. Receipts sit three levels under uri and
// end in .json, so the store's readers (replay reads <uri>/*/*.ndjson* and
// <uri>/replaying/*/*.ndjson*) never see them; "_receipts" is not an integration id
// (ids are [a-z0-9-]+).
const receiptsDir = "_receipts"

// runID is what a run id may be: no dots (so never ".ndjson"), no slashes.
var runID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// WriteOptionFn is an option of Write and WriteLive.
type WriteOptionFn func(*writeOption)

type writeOption struct {
	run string
}

// Receipts makes Write leave, after each file it writes, a receipt of what the file
// holds, for ReadTally. run names one execution of one job (letters, digits, - and _;
// unique per execution): another job's receipts must not mix with this one's. A bad
// run id panics while the graph is built.
func Receipts(run string) WriteOptionFn {
	if !runID.MatchString(run) {
		panic(fmt.Sprintf("deadletterio.Receipts: run %q must match %s", run, runID))
	}
	return func(o *writeOption) { o.run = run }
}

// Tally counts what a run wrote to the store: the sum of its receipts.
type Tally struct {
	Files        int   `json:"files"`         // dead-letter files written
	InvalidLines int64 `json:"invalid_lines"` // records of invalid input lines
	FileErrors   int64 `json:"file_errors"`   // records of input files not read to the end
	// DeadLettered counts records of impressions (undeliverable, or kept by replay) by
	// integration id.
	DeadLettered map[string]int64 `json:"dead_lettered,omitempty"`
}

// Impressions is the number of impression records over all integrations.
func (t Tally) Impressions() int64 {
	var n int64
	for _, c := range t.DeadLettered {
		n += c
	}
	return n
}

// Records is the number of records of every kind.
func (t Tally) Records() int64 { return t.InvalidLines + t.FileErrors + t.Impressions() }

func (t *Tally) add(r *Record) {
	switch {
	case r.Impression != nil:
		if t.DeadLettered == nil {
			t.DeadLettered = map[string]int64{}
		}
		t.DeadLettered[r.Integration]++
	case r.FileError:
		t.FileErrors++
	default:
		t.InvalidLines++
	}
}

func (t *Tally) sum(o Tally) {
	t.Files += o.Files
	t.InvalidLines += o.InvalidLines
	t.FileErrors += o.FileErrors
	for id, n := range o.DeadLettered {
		if t.DeadLettered == nil {
			t.DeadLettered = map[string]int64{}
		}
		t.DeadLettered[id] += n
	}
}

// receipt is one file's: its store-relative name and what it holds (Files is 1).
type receipt struct {
	File string `json:"file"`
	Tally
}

func receiptGlob(uri, run string) string {
	return strings.TrimSuffix(uri, "/") + "/" + receiptsDir + "/" + run + "/*.json"
}

func writeReceipt(ctx context.Context, fs filesystem.Interface, uri, run, name string, t Tally) error {
	h := fnv.New64a()
	h.Write([]byte(name))
	full := fmt.Sprintf("%s/%s/%s/%016x.json", strings.TrimSuffix(uri, "/"), receiptsDir, run, h.Sum64())
	t.Files = 1
	b, err := json.Marshal(receipt{File: name, Tally: t})
	if err != nil {
		return fmt.Errorf("deadletterio: receipt for %s: %w", name, err)
	}
	return writeFile(ctx, fs, full, append(b, '\n'))
}

// ReadTally sums the receipts Write left in the store at uri for run (Receipts). A run
// that wrote nothing has none: its Tally is zero. A receipt that cannot be listed,
// read or parsed is an error: the counts would be wrong.
func ReadTally(ctx context.Context, uri, run string) (Tally, error) {
	var t Tally
	files, err := listReceipts(ctx, uri, run)
	if err != nil {
		return t, err
	}
	fs, err := filesystem.New(ctx, uri)
	if err != nil {
		return t, fmt.Errorf("deadletterio: %s: %w", uri, err)
	}
	defer fs.Close()
	for _, f := range files {
		b, err := filesystem.Read(ctx, fs, f)
		if err != nil {
			return t, fmt.Errorf("deadletterio: read receipt %s: %w", f, err)
		}
		var r receipt
		if err := json.Unmarshal(b, &r); err != nil {
			return t, fmt.Errorf("deadletterio: receipt %s: %w", f, err)
		}
		t.sum(r.Tally)
	}
	return t, nil
}

// ClearReceipts removes the receipts of run once they have been read (ReadTally).
func ClearReceipts(ctx context.Context, uri, run string) error {
	files, err := listReceipts(ctx, uri, run)
	if err != nil {
		return err
	}
	fs, err := filesystem.New(ctx, uri)
	if err != nil {
		return fmt.Errorf("deadletterio: %s: %w", uri, err)
	}
	defer fs.Close()
	rm, ok := fs.(filesystem.Remover)
	if !ok {
		return fmt.Errorf("deadletterio: cannot remove files from %s", uri)
	}
	for _, f := range files {
		if err := rm.Remove(ctx, f); err != nil {
			return fmt.Errorf("deadletterio: remove receipt %s: %w", f, err)
		}
	}
	if !strings.Contains(uri, "://") { // a directory: drop the emptied folders too
		dir := filepath.Join(uri, receiptsDir)
		os.Remove(filepath.Join(dir, run))
		os.Remove(dir) // only when no other run's receipts are there
	}
	return nil
}

func listReceipts(ctx context.Context, uri, run string) ([]string, error) {
	if !runID.MatchString(run) {
		return nil, fmt.Errorf("deadletterio: run %q must match %s", run, runID)
	}
	glob := receiptGlob(uri, run)
	files, err := List(ctx, glob)
	if err != nil {
		return nil, fmt.Errorf("deadletterio: list %s: %w", glob, err)
	}
	return files, nil
}
