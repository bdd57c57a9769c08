// Package impressionio reads impressions from NDJSON files (CONTRACT §1).
package impressionio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/mtime"

	// The schemes Read accepts: local paths, gs:// and s3://.
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/gcs"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/local"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	_ "github.com/outflow/outflow/io/s3io" // s3://, with the configured endpoint

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/linefile"
	"github.com/outflow/outflow/internal/metricname"
	"github.com/outflow/outflow/internal/oplog"
	"github.com/outflow/outflow/internal/progress"
	"github.com/outflow/outflow/io/deadletterio"
	"github.com/outflow/outflow/transforms/encode"
	"github.com/outflow/outflow/transforms/route"
)

func init() {
	register.DoFn4x1[context.Context, span, func(beam.EventTime, impression.Impression), func(deadletterio.Record), error](&readFn{})
	register.DoFn4x1[context.Context, span, func(beam.EventTime, string, encode.Chunk), func(deadletterio.Record), error](&readObjectsFn{})
	register.Emitter2[beam.EventTime, impression.Impression]()
	register.Emitter3[beam.EventTime, string, encode.Chunk]()
	register.Emitter1[deadletterio.Record]()
}

type readOption struct {
	since, until time.Time
	from, to     time.Time
	shared       sharing
	progress     string
	spanBytes    int64
	files        []File // nil: what the glob matches when the job runs
}

// sharing says which of several jobs reading the same input count what, so a
// backfill's totals count each line once.
type sharing struct {
	NotMyLines bool // another job counts this slice's valid lines
	NotTheRest bool // another job counts and dead-letters invalid lines, lines out of range, and unreadable files
}

// ReadOptionFn configures Read.
type ReadOptionFn func(*readOption)

// Since keeps impressions at or after t.
func Since(t time.Time) ReadOptionFn { return func(o *readOption) { o.since = t } }

// Until keeps impressions before t.
func Until(t time.Time) ReadOptionFn { return func(o *readOption) { o.until = t } }

// Within keeps impressions in [from, to), a job's slice of a backfill (zero: open);
// the others are left to other jobs: neither delivered nor counted.
func Within(from, to time.Time) ReadOptionFn {
	return func(o *readOption) { o.from, o.to = from, to }
}

// Shared tells a job reading the same input as others what it must not count:
// ownLines false leaves its slice's valid lines to another job, ownRest false leaves
// invalid lines, lines outside Since/Until and unreadable files (counts and dead
// letters) to another.
func Shared(ownLines, ownRest bool) ReadOptionFn {
	return func(o *readOption) { o.shared = sharing{NotMyLines: !ownLines, NotTheRest: !ownRest} }
}

// Progress counts the lines read under key in package progress, for a launcher that
// shows how far a job has come.
func Progress(key string) ReadOptionFn { return func(o *readOption) { o.progress = key } }

// Exactly reads these files, as a plan listed them, rather than what the glob matches
// when the job runs. A file whose size or modification time is not what the list
// says, before its lines are read or after, or that is gone, fails the job, naming
// the file: a job never reports done having read less than was planned, or more.
func Exactly(files []File) ReadOptionFn {
	return func(o *readOption) { o.files = slices.Clip(files) }
}

// SpanBytes sets how much of a large uncompressed file one element reads: files of
// at least twice n bytes are read in spans of about n (default 64 MiB); 0 reads every
// file whole.
func SpanBytes(n int64) ReadOptionFn { return func(o *readOption) { o.spanBytes = n } }

// Read reads the impression files matching glob (local, s3:// or gs://; names ending
// in .gz are gunzipped). Valid impressions come out timestamped with their event time;
// invalid lines, and files that cannot be read, come out as dead-letter records. A bad
// line or file never stops the job.
//
// Out: PCollection<impression.Impression>, PCollection<deadletterio.Record>.
func Read(s beam.Scope, glob string, opts ...ReadOptionFn) (imps, invalid beam.PCollection) {
	s = s.Scope("impressionio.Read")
	o := readOptions(opts)
	return beam.ParDo2(s, &readFn{fileReader: o.fileReader()}, spans(s, glob, o.files, o.spanBytes))
}

// ObjectTarget is an object store integration, for ReadObjects.
type ObjectTarget struct {
	route.Target
	Window time.Duration `json:"window"`
	Format encode.Format `json:"format"`
}

// ReadObjects reads as Read does, and routes, windows and encodes the valid
// impressions for targets as it parses them, in every parsing worker: what leaves the
// reader is a few chunks per target, shard and window (encode.Chunker) rather than
// every impression. Chunks are keyed by route.Key and timestamped with their window's
// start; chunks of one key and window are to be merged (encode.MergeChunks). Every
// impression that Read would emit goes, through route.Fanout's routing, into the
// chunks of every target it matches.
//
// Out: PCollection<KV<string, encode.Chunk>>, PCollection<deadletterio.Record>.
func ReadObjects(s beam.Scope, glob string, targets []ObjectTarget, opts ...ReadOptionFn) (chunks, invalid beam.PCollection) {
	s = s.Scope("impressionio.ReadObjects")
	o := readOptions(opts)
	fn := &readObjectsFn{fileReader: o.fileReader(), Targets: targets}
	return beam.ParDo2(s, fn, spans(s, glob, o.files, o.spanBytes))
}

func readOptions(opts []ReadOptionFn) readOption {
	o := readOption{spanBytes: spanBytes}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

func (o readOption) fileReader() fileReader {
	return fileReader{Progress: o.progress, Sharing: o.shared, Since: ms(o.since), Until: ms(o.until), From: ms(o.from), To: ms(o.to)}
}

// ms is t in Unix ms, 0 for the zero time: unbounded.
func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fileReader reads one file per element: what Read and ReadObjects share. Times are
// Unix ms; 0 means unbounded.
type fileReader struct {
	Since    int64   `json:"since"` // the range asked for: other lines are filtered
	Until    int64   `json:"until"`
	From     int64   `json:"from"` // this job's slice of it: other lines are left to other jobs
	To       int64   `json:"to"`
	Sharing  sharing `json:"sharing"`
	Progress string  `json:"progress,omitempty"`

	lines, invalid, filtered, valid, fileErrors metricname.Counter
}

func (fn *fileReader) Setup() {
	progress.Add(progress.StartedKey(fn.Progress), 1)
	fn.lines = metricname.NewCounter(metricname.Job, metricname.Lines)
	fn.invalid = metricname.NewCounter(metricname.Job, metricname.InvalidLines)
	fn.filtered = metricname.NewCounter(metricname.Job, metricname.Filtered)
	fn.valid = metricname.NewCounter(metricname.Job, metricname.Valid)
	fn.fileErrors = metricname.NewCounter(metricname.Job, metricname.FileErrors)
}

// mine reports whether a parsed line is a valid impression of this job: in the range
// asked for and in this job's slice.
func (fn *fileReader) mine(p *parsed) bool {
	return p.err == nil && !outside(p.imp.Time, fn.Since, fn.Until) && !outside(p.imp.Time, fn.From, fn.To)
}

// read reads the span sp of a file, counts its lines, and dead-letters its invalid
// lines and, if it is damaged, the file. Each impression of this job (mine) is given
// its origin and reception time in the parsing worker; then fw.work, when set, runs
// there after each batch, and valid, when set, is called on the bundle's goroutine,
// in file order, with each impression of this job.
func (fn *fileReader) read(ctx context.Context, sp span, dead func(deadletterio.Record), fw fileWork, valid func(*impression.Impression)) error {
	if err := sp.check(ctx); err != nil {
		return err
	}
	origin := fileOrigin(sp.Path)
	received := time.Now().UnixMilli()
	work := fw.work
	fw.work = func(w int, b *batch) {
		for i := range b.parsed {
			if p := &b.parsed[i]; fn.mine(p) {
				p.imp.Origin = origin | (b.first+uint64(i))&0xFFFFFFFF
				p.imp.ReceivedAt = received
			}
		}
		if work != nil {
			work(w, b)
		}
	}
	if fn.Sharing.NotTheRest && (fn.From != 0 || fn.To != 0) {
		// Lines of other slices are other jobs' to deliver, and invalid lines another
		// job's to count: a line whose time is plainly outside this slice needs no parse.
		fw.skip = func(line []byte) bool {
			t, ok := quickTime(line)
			return ok && outside(t, fn.From, fn.To)
		}
	}
	// Counted per file, not per line: a Beam counter costs a lookup and a lock per call.
	var lines, invalid, filtered, valids, last, seen uint64
	err := parseFile(ctx, sp, fw, func(line uint64, raw []byte, p *parsed) {
		if seen++; seen%4096 == 0 {
			progress.Add(fn.Progress, 4096)
		}
		last = line
		var ie *impression.InvalidError
		switch {
		case errors.Is(p.err, impression.ErrBlank):
			return
		case errors.As(p.err, &ie):
			if !fn.Sharing.NotTheRest {
				lines++
				invalid++
				reason := ie.Reason
				if len(raw) > maxKeptLine {
					raw = raw[:maxKeptLine]
					reason += fmt.Sprintf("; raw holds the line's first %d bytes", maxKeptLine)
				}
				dead(deadletterio.Invalid(raw, reason, fmt.Sprintf("%s:%d", sp.Path, line), origin|line&0xFFFFFFFF))
			}
			return
		case outside(p.imp.Time, fn.Since, fn.Until):
			if !fn.Sharing.NotTheRest {
				lines++
				filtered++
			}
			return
		case outside(p.imp.Time, fn.From, fn.To):
			return
		}
		if !fn.Sharing.NotMyLines {
			lines++
			valids++
		}
		if valid != nil {
			valid(&p.imp)
		}
	})
	fn.lines.Inc(ctx, int64(lines))
	fn.invalid.Inc(ctx, int64(invalid))
	fn.filtered.Inc(ctx, int64(filtered))
	fn.valid.Inc(ctx, int64(valids))
	progress.Add(fn.Progress, int64(seen%4096))
	var corrupt *CorruptError
	switch {
	case err == nil:
		return sp.check(ctx) // not rewritten while it was read
	case ctx.Err() != nil:
		return ctx.Err()
	case !errors.As(err, &corrupt):
		// The input could not be read (a reset connection, expired credentials): fail
		// the bundle, and with it the job, rather than report a file done that was not.
		return fmt.Errorf("impressionio: read %s: %w", sp, err)
	case fn.Sharing.NotTheRest:
		return nil // the job that owns the rest dead-letters the file
	}
	// A corrupt file (not gzip, truncated): the lines before the damage stand, the
	// rest cannot be read by anybody. Dead-lettered as a file error: the run exits 3.
	fn.fileErrors.Inc(ctx, 1)
	reason := fmt.Sprintf("reading %s stopped after line %d: %v", sp.Path, last, err)
	oplog.L().ErrorContext(ctx, "input file is damaged; the rest of it is dead-lettered", "file", sp.Path, "line", last, "error", err)
	dead(deadletterio.FileError(sp.Path, reason, origin))
	return nil
}

// fileOrigin is the high half of the origins of a file's lines (impression.Origin).
func fileOrigin(path string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(path))
	return h.Sum64() << 32
}

// readFn is Read's DoFn.
type readFn struct {
	fileReader
}

func (fn *readFn) ProcessElement(ctx context.Context, sp span, emit func(beam.EventTime, impression.Impression), dead func(deadletterio.Record)) error {
	return fn.read(ctx, sp, dead, fileWork{}, func(imp *impression.Impression) {
		emit(mtime.FromMilliseconds(imp.Time), *imp)
	})
}

// readObjectsFn is ReadObjects' DoFn. Each parsing worker routes, encodes and
// compresses the impressions it parsed into a Chunker of its own; the bundle's
// goroutine emits what they gathered, once it holds maxHeld bytes and when the file
// is done.
type readObjectsFn struct {
	fileReader
	Targets []ObjectTarget `json:"targets"`

	table  *route.Table
	routed []metricname.Counter
}

// maxHeld bounds what the parsing workers hold before their chunks are emitted:
// input whose times are spread rather than in order opens many windows at once.
var maxHeld = 32 << 20

func (fn *readObjectsFn) Setup() {
	fn.fileReader.Setup()
	targets := make([]route.Target, len(fn.Targets))
	fn.routed = make([]metricname.Counter, len(fn.Targets))
	for i, t := range fn.Targets {
		targets[i] = t.Target
		fn.routed[i] = metricname.NewCounter(t.ID, metricname.Routed)
	}
	fn.table = route.NewTable(targets)
}

func (fn *readObjectsFn) ProcessElement(ctx context.Context, sp span, emit func(beam.EventTime, string, encode.Chunk), dead func(deadletterio.Record)) error {
	// The bundle's goroutine only counts lines and emits chunks: every core parses.
	workers := make([]*objectWorker, runtime.GOMAXPROCS(0))
	for i := range workers {
		workers[i] = &objectWorker{chunker: encode.NewChunker(), routed: make([]int64, len(fn.Targets))}
	}
	send := func(chunks []encode.KeyedChunk) {
		for _, c := range chunks {
			emit(mtime.FromTime(c.Start), c.Key, c.Chunk)
		}
	}
	work := func(w int, b *batch) {
		ow := workers[w]
		for i := range b.parsed {
			p := &b.parsed[i]
			if !fn.mine(p) {
				continue
			}
			imp := &p.imp
			fn.table.Each(imp, func(t int, key string) {
				ow.routed[t]++
				ow.chunker.Add(key, fn.Targets[t].Window, fn.Targets[t].Format, imp)
			})
		}
		if ow.chunker.Held() >= maxHeld/len(workers) {
			chunks := ow.chunker.Drain()
			b.then = func() { send(chunks) }
		}
	}
	// Each worker compresses what it still holds once the file is parsed.
	finish := func(w int) { workers[w].rest = workers[w].chunker.Drain() }
	err := fn.read(ctx, sp, dead, fileWork{work: work, finish: finish, workers: len(workers)}, nil)
	for _, w := range workers {
		send(w.rest)
		for t, n := range w.routed {
			if n > 0 {
				fn.routed[t].Inc(ctx, n)
			}
		}
	}
	return err
}

// objectWorker is what one parsing worker of readObjectsFn gathers.
type objectWorker struct {
	chunker *encode.Chunker
	rest    []encode.KeyedChunk // what it held when the file was parsed
	routed  []int64             // per target
}

// quickTime finds the top-level "time" of a JSON object line without parsing it: one
// pass that skips strings and nested values. ok is false when it cannot tell: no such
// key, or one that the parser might read otherwise (a second "time", a key written
// with escapes or in other letter case), which the parser then judges.
func quickTime(line []byte) (t int64, ok bool) {
	depth, inString, found := 0, false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case inString:
			if c == '\\' {
				i++
			} else if c == '"' {
				inString = false
			}
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
		case c == '"':
			inString = true
			if depth != 1 || !isKey(line[i:]) {
				continue
			}
			key, _, _ := bytes.Cut(line[i+1:], []byte(`"`))
			switch {
			case bytes.IndexByte(key, '\\') >= 0:
				return 0, false
			case !bytes.EqualFold(key, []byte("time")):
				continue
			case found || string(key) != "time":
				return 0, false
			}
			found = true
			_, value, _ := bytes.Cut(line[i+len(`"time"`):], []byte(":"))
			if t, ok = leadingInt(value); !ok {
				return 0, false
			}
		}
	}
	return t, found
}

// isKey reports whether the string that starts b (at its opening quote) is followed
// by a colon: an object key rather than a value.
func isKey(b []byte) bool {
	for i := 1; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			rest := bytes.TrimLeft(b[i+1:], " \t")
			return len(rest) > 0 && rest[0] == ':'
		}
	}
	return false
}

// leadingInt reads a non-negative JSON integer literal ending where the value ends.
func leadingInt(b []byte) (int64, bool) {
	b = bytes.TrimLeft(b, " \t")
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		n++
	}
	if n == 0 || n > 18 || (n < len(b) && !strings.ContainsRune(",} \t\r", rune(b[n]))) {
		return 0, false
	}
	v, err := strconv.ParseInt(string(b[:n]), 10, 64)
	return v, err == nil
}

// outside reports whether t is outside [from, to); 0 bounds are open.
func outside(t, from, to int64) bool {
	return from != 0 && t < from || to != 0 && t >= to
}

// maxKeptLine bounds how much of one line the reader holds. Lines up to it reach the
// dead-letter store byte for byte (the parser refuses those over
// impression.MaxLineBytes); longer ones keep their first maxKeptLine bytes, so a huge
// file without line ends cannot exhaust a worker's memory.
const maxKeptLine = 16 << 20

// CorruptError is a file whose bytes were all read but do not decode: not gzip, or a
// truncated or damaged gzip stream. Retrying cannot help. It is linefile's, named
// here too for callers outside this module.
type CorruptError = linefile.CorruptError

// readLines calls fn for each line of the span sp after its first skip
// (linefile.Lines); lines longer than maxKeptLine are passed cut to maxKeptLine+1
// bytes. A failure to read is returned as it is, for parseFile to retry if it may
// pass; damaged content is a *CorruptError.
func readLines(ctx context.Context, sp span, skip uint64, fn func([]byte) error) error {
	o := sp.options()
	o.Skip, o.MaxLine = skip, maxKeptLine
	return linefile.Lines(ctx, sp.Path, o, fn)
}
