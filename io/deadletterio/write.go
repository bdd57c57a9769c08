package deadletterio

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window/trigger"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem"

	// The stores Write and Read accept: directories, gs:// and s3://.
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/gcs"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/local"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/outflow/outflow/internal/ack"
	_ "github.com/outflow/outflow/io/s3io" // s3://, with the configured endpoint
	"github.com/outflow/outflow/runners"
)

func init() {
	register.DoFn2x0[Record, func(string, Record)](&keyFn{})
	register.DoFn4x1[context.Context, string, func(*Record) bool, func(int32, []byte), error](&writeFn{})
	register.Emitter2[int32, []byte]()
	register.Emitter2[string, Record]()
	register.Iter1[Record]()
}

// Write stores records as NDJSON files under uri (a directory, s3://… or gs://…).
// File names are deterministic, so a rerun overwrites a file instead of adding a copy:
// undeliverable impressions go under their integration, one file per batch; invalid
// input lines under invalid/, one file per block of lines of their input file (see
// FileName), so that no worker holds a whole wrong-format file; each file error in a
// file of its own. Within a file, records are in input order.
//
// With Receipts(run), each file written is followed by a receipt of what it holds,
// which ReadTally sums for the launcher's exit code.
//
// In: PCollection<Record>.
func Write(s beam.Scope, uri string, records beam.PCollection, opts ...WriteOptionFn) {
	s = s.Scope("deadletterio.Write")
	runners.End(s, write(s, newWriteFn(uri, false, opts), records)) // the marks: none in a batch job
}

// liveEvery is how often a stream writes what was dead-lettered.
const liveEvery = 5 * time.Second

// WriteLive is Write for a stream, which never ends: what was dead-lettered is
// written every few seconds of processing time, each time to files of its own
// (their names carry a digest of their records), so a later firing never replaces
// an earlier file. Once a file is written, marks (package ack) report its records'
// copies finished.
//
// In: PCollection<Record>. Out: marks, PCollection<KV<int32, []byte>>.
func WriteLive(s beam.Scope, uri string, records beam.PCollection, opts ...WriteOptionFn) (marks beam.PCollection) {
	s = s.Scope("deadletterio.WriteLive")
	every := beam.WindowInto(s, window.NewGlobalWindows(), records,
		beam.Trigger(trigger.Repeat(trigger.AfterProcessingTime().PlusDelay(liveEvery))), beam.PanesDiscard())
	return write(s, newWriteFn(uri, true, opts), every)
}

func newWriteFn(uri string, live bool, opts []WriteOptionFn) *writeFn {
	var o writeOption
	for _, opt := range opts {
		opt(&o)
	}
	return &writeFn{URI: uri, Live: live, Run: o.run}
}

func write(s beam.Scope, fn *writeFn, records beam.PCollection) (marks beam.PCollection) {
	keyed := beam.ParDo(s, &keyFn{}, records)
	return beam.ParDo(s, fn, beam.GroupByKey(s, keyed))
}

// KafkaSource is the Source of a Kafka record's invalid line: its partition and offset.
const KafkaSource = "kafka partition %d offset %d"

// Invalid input lines are written in blocks, so that writing one holds at most about
// blockBytes of its lines, however large the input file (10 GB given by mistake is
// 10 GB of invalid lines). A block is a range of line numbers of one input file,
// aligned on its width: blockLines for lines of up to blockBytes/blockLines bytes,
// halved as lines are longer, down to a single line. Lines of different sizes may thus
// be in different blocks of overlapping ranges; each line is in exactly one, always
// the same.
const (
	blockLines = 8192
	blockBytes = 16 << 20
)

// block returns the range of lines [first, last] of the block holding line n
// (counted from 1) of size bytes.
func block(n, size int) (first, last int) {
	width := blockLines
	for width > 1 && width*size > blockBytes {
		width /= 2
	}
	first = (n-1)/width*width + 1
	return first, first + width - 1
}

// FileName returns the store-relative file of r. Undeliverable impressions go under
// their integration, named after their batch: "<integration>/<batch>.ndjson". Invalid
// input goes under invalid/, named after its source file and its block of lines:
// "invalid/<base>-<hash>-<first>-<last>.ndjson", or its Kafka partition and block of
// offsets: "invalid/kafka-partition-<p>-<first>-<last>.ndjson"; a file error gets
// "invalid/<base>-<hash>.ndjson" of its own.
func FileName(r *Record) string {
	if r.Integration != "" {
		return fmt.Sprintf("%s/%s.ndjson", r.Integration, sanitize(r.Source))
	}
	var partition int32
	var offset int64
	if n, _ := fmt.Sscanf(r.Source, KafkaSource, &partition, &offset); n == 2 && offset >= 0 {
		// A stream's invalid records: many a second from a producer gone wrong, so one
		// file a block, not a file each.
		first, last := block(int(offset)+1, len(r.Raw)+len(r.RawBase64))
		return fmt.Sprintf("invalid/kafka-partition-%d-%d-%d.ndjson", partition, first-1, last-1)
	}
	src, line, ok := splitSource(r.Source)
	h := fnv.New32a()
	h.Write([]byte(src))
	name := fmt.Sprintf("invalid/%s-%08x", sanitize(path.Base(src)), h.Sum32())
	if !ok || r.FileError {
		return name + ".ndjson"
	}
	first, last := block(line, len(r.Raw)+len(r.RawBase64))
	return fmt.Sprintf("%s-%d-%d.ndjson", name, first, last)
}

// sanitize keeps a file name portable.
func sanitize(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '_'
		}
	}
	return string(b)
}

type keyFn struct{}

func (keyFn) ProcessElement(r Record, emit func(string, Record)) { emit(FileName(&r), r) }

type writeFn struct {
	URI  string `json:"uri"`
	Live bool   `json:"live"`          // a stream's: file names carry a digest of their records; marks
	Run  string `json:"run,omitempty"` // write receipts for this run (Receipts)
}

// line is a record of a file being written, encoded, with its line end.
type line struct {
	source string
	json   []byte
}

func (fn *writeFn) ProcessElement(ctx context.Context, name string, iter func(*Record) bool, marks func(int32, []byte)) error {
	// Only the encoded lines are held, once: at most one block of a file's invalid
	// lines, or one batch.
	var lines []line
	var finished ack.Tally
	var count Tally
	var r Record
	for iter(&r) {
		b, err := r.MarshalJSON()
		if err != nil {
			return fmt.Errorf("deadletterio: encode a record for %s: %w", name, err)
		}
		lines = append(lines, line{source: r.Source, json: append(b, '\n')})
		finished.Done(r.Origin)
		count.add(&r)
	}
	// Input order, then content, so the file is the same on every run.
	slices.SortFunc(lines, func(a, b line) int {
		if c := compareSource(a.source, b.source); c != 0 {
			return c
		}
		return bytes.Compare(a.json, b.json)
	})
	body := make([][]byte, len(lines))
	for i, l := range lines {
		body[i] = l.json
	}
	if fn.Live {
		h := fnv.New64a()
		for _, b := range body {
			h.Write(b)
		}
		name = fmt.Sprintf("%s-%016x.ndjson", strings.TrimSuffix(name, ".ndjson"), h.Sum64())
	}

	full := strings.TrimSuffix(fn.URI, "/") + "/" + name
	fs, err := filesystem.New(ctx, full)
	if err != nil {
		return fmt.Errorf("deadletterio: %s: %w", full, err)
	}
	defer fs.Close()
	if err := writeFile(ctx, fs, full, body...); err != nil {
		return err
	}
	if fn.Run != "" {
		if err := writeReceipt(ctx, fs, fn.URI, fn.Run, name, count); err != nil {
			return err
		}
	}
	if fn.Live {
		finished.Emit(marks) // stored: their input records may be committed
	}
	return nil
}

// writeFile writes parts, one after the other, as the file full.
func writeFile(ctx context.Context, fs filesystem.Interface, full string, parts ...[]byte) error {
	wc, err := fs.OpenWrite(ctx, full)
	if err != nil {
		return fmt.Errorf("deadletterio: open %s: %w", full, err)
	}
	w := bufio.NewWriterSize(wc, 256<<10)
	for _, p := range parts {
		if _, err := w.Write(p); err != nil {
			wc.Close()
			return fmt.Errorf("deadletterio: write %s: %w", full, err)
		}
	}
	if err := w.Flush(); err != nil {
		wc.Close()
		return fmt.Errorf("deadletterio: write %s: %w", full, err)
	}
	// A local file is on disk, and named in its directory, before the stream reports
	// its records finished and commits past them: a crash then must not lose it.
	if f, ok := wc.(interface{ Sync() error }); ok {
		if err := f.Sync(); err != nil {
			wc.Close()
			return fmt.Errorf("deadletterio: sync %s: %w", full, err)
		}
	}
	if err := wc.Close(); err != nil {
		return fmt.Errorf("deadletterio: close %s: %w", full, err)
	}
	if !strings.Contains(full, "://") {
		if err := syncDir(filepath.Dir(full)); err != nil {
			return fmt.Errorf("deadletterio: sync %s: %w", filepath.Dir(full), err)
		}
	}
	return nil
}

// syncDir makes a local directory's entries durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// compareSource orders "file:line" sources by file, then by line number.
func compareSource(a, b string) int {
	af, al, _ := splitSource(a)
	bf, bl, _ := splitSource(b)
	if c := strings.Compare(af, bf); c != 0 {
		return c
	}
	return al - bl
}

// splitSource splits "file:line". A source without a line (a file error, a batch id)
// has ok false and a line that sorts after every line of the file.
func splitSource(s string) (file string, line int, ok bool) {
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		if n, err := strconv.Atoi(s[i+1:]); err == nil && n > 0 {
			return s[:i], n, true
		}
	}
	return s, 1 << 62, false
}
