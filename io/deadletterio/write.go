package deadletterio

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"path"
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
)

func init() {
	register.DoFn2x0[Record, func(string, Record)](&keyFn{})
	register.DoFn3x1[context.Context, string, func(*Record) bool, error](&writeFn{})
	register.Emitter2[string, Record]()
	register.Iter1[Record]()
}

// Write stores records as NDJSON files under uri (a directory, s3://… or gs://…). The
// records of one input file, or of one undeliverable batch, share a file whose name
// is deterministic, so a rerun overwrites it instead of adding a copy.
//
// In: PCollection<Record>.
func Write(s beam.Scope, uri string, records beam.PCollection) {
	s = s.Scope("deadletterio.Write")
	write(s, &writeFn{URI: uri}, records)
}

// liveEvery is how often a stream writes what was dead-lettered.
const liveEvery = 5 * time.Second

// WriteLive is Write for a stream, which never ends: what was dead-lettered is
// written every few seconds of processing time, each time to files of its own
// (their names carry a digest of their records), so a later firing never replaces
// an earlier file.
//
// In: PCollection<Record>.
func WriteLive(s beam.Scope, uri string, records beam.PCollection) {
	s = s.Scope("deadletterio.WriteLive")
	every := beam.WindowInto(s, window.NewGlobalWindows(), records,
		beam.Trigger(trigger.Repeat(trigger.AfterProcessingTime().PlusDelay(liveEvery))), beam.PanesDiscard())
	write(s, &writeFn{URI: uri, Live: true}, every)
}

func write(s beam.Scope, fn *writeFn, records beam.PCollection) {
	keyed := beam.ParDo(s, &keyFn{}, records)
	beam.ParDo0(s, fn, beam.GroupByKey(s, keyed))
}

// FileName returns the store-relative file of r: invalid input goes under invalid/,
// named after its source file; undeliverable impressions under their integration,
// named after their batch.
func FileName(r *Record) string {
	if r.Integration != "" {
		return fmt.Sprintf("%s/%s.ndjson", r.Integration, sanitize(r.Source))
	}
	src, _ := splitSource(r.Source)
	h := fnv.New32a()
	h.Write([]byte(src))
	return fmt.Sprintf("invalid/%s-%08x.ndjson", sanitize(path.Base(src)), h.Sum32())
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
	Live bool   `json:"live"` // file names carry a digest of their records
}

func (fn *writeFn) ProcessElement(ctx context.Context, name string, iter func(*Record) bool) error {
	var recs []Record
	var r Record
	for iter(&r) {
		recs = append(recs, r)
	}
	// Input order, so the file is the same on every run.
	slices.SortFunc(recs, func(a, b Record) int { return compareSource(a.Source, b.Source) })
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false)
	for i := range recs {
		if err := enc.Encode(&recs[i]); err != nil {
			return fmt.Errorf("deadletterio: encode a record for %s: %w", name, err)
		}
	}
	if fn.Live {
		h := fnv.New64a()
		h.Write(body.Bytes())
		name = fmt.Sprintf("%s-%016x.ndjson", strings.TrimSuffix(name, ".ndjson"), h.Sum64())
	}

	full := strings.TrimSuffix(fn.URI, "/") + "/" + name
	fs, err := filesystem.New(ctx, full)
	if err != nil {
		return fmt.Errorf("deadletterio: %s: %w", full, err)
	}
	defer fs.Close()
	wc, err := fs.OpenWrite(ctx, full)
	if err != nil {
		return fmt.Errorf("deadletterio: open %s: %w", full, err)
	}
	if _, err := wc.Write(body.Bytes()); err != nil {
		wc.Close()
		return fmt.Errorf("deadletterio: write %s: %w", full, err)
	}
	if err := wc.Close(); err != nil {
		return fmt.Errorf("deadletterio: close %s: %w", full, err)
	}
	for i := range recs {
		ack.Done(recs[i].Origin) // stored: their input records may be committed
	}
	return nil
}

// compareSource orders "file:line" sources by file, then by line number.
func compareSource(a, b string) int {
	af, al := splitSource(a)
	bf, bl := splitSource(b)
	if c := strings.Compare(af, bf); c != 0 {
		return c
	}
	return al - bl
}

func splitSource(s string) (string, int) {
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		if n, err := strconv.Atoi(s[i+1:]); err == nil {
			return s[:i], n
		}
	}
	return s, 1 << 62 // a file-level record sorts after the file's lines
}
