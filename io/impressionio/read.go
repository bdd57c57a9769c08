// Package impressionio reads impressions from NDJSON files (CONTRACT §1).
package impressionio

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/mtime"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/fileio"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem"

	// The schemes Read accepts: local paths, gs:// and s3://.
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/gcs"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/local"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/klauspost/compress/gzip"
	_ "github.com/outflow/outflow/io/s3io" // s3://, with the configured endpoint

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/metricname"
	"github.com/outflow/outflow/internal/oplog"
	"github.com/outflow/outflow/internal/progress"
	"github.com/outflow/outflow/io/deadletterio"
)

func init() {
	register.DoFn4x1[context.Context, fileio.FileMetadata, func(beam.EventTime, impression.Impression), func(deadletterio.Record), error](&readFn{})
	register.Emitter2[beam.EventTime, impression.Impression]()
	register.Emitter1[deadletterio.Record]()
}

type readOption struct {
	since, until time.Time
	from, to     time.Time
	shared       sharing
	progress     string
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

// Read reads the impression files matching glob (local, s3:// or gs://; names ending
// in .gz are gunzipped). Valid impressions come out timestamped with their event time;
// invalid lines, and files that cannot be read, come out as dead-letter records. A bad
// line or file never stops the job.
//
// Out: PCollection<impression.Impression>, PCollection<deadletterio.Record>.
func Read(s beam.Scope, glob string, opts ...ReadOptionFn) (imps, invalid beam.PCollection) {
	s = s.Scope("impressionio.Read")
	var o readOption
	for _, opt := range opts {
		opt(&o)
	}
	fn := &readFn{Progress: o.progress, Sharing: o.shared, Since: ms(o.since), Until: ms(o.until), From: ms(o.from), To: ms(o.to)}
	files := fileio.MatchFiles(s, glob)
	return beam.ParDo2(s, fn, files)
}

// ms is t in Unix ms, 0 for the zero time: unbounded.
func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// readFn reads one file per element. Times are Unix ms; 0 means unbounded.
type readFn struct {
	Since    int64   `json:"since"` // the range asked for: other lines are filtered
	Until    int64   `json:"until"`
	From     int64   `json:"from"` // this job's slice of it: other lines are left to other jobs
	To       int64   `json:"to"`
	Sharing  sharing `json:"sharing"`
	Progress string  `json:"progress,omitempty"`

	lines, invalid, filtered, valid, fileErrors metricname.Counter
}

func (fn *readFn) Setup() {
	progress.Add(progress.StartedKey(fn.Progress), 1)
	fn.lines = metricname.NewCounter(metricname.Job, metricname.Lines)
	fn.invalid = metricname.NewCounter(metricname.Job, metricname.InvalidLines)
	fn.filtered = metricname.NewCounter(metricname.Job, metricname.Filtered)
	fn.valid = metricname.NewCounter(metricname.Job, metricname.Valid)
	fn.fileErrors = metricname.NewCounter(metricname.Job, metricname.FileErrors)
}

func (fn *readFn) ProcessElement(ctx context.Context, f fileio.FileMetadata, emit func(beam.EventTime, impression.Impression), dead func(deadletterio.Record)) error {
	h := fnv.New64a()
	h.Write([]byte(f.Path))
	origin := h.Sum64() << 32
	var valid, last uint64
	received := time.Now().UnixMilli()
	var skip func([]byte) bool
	if fn.Sharing.NotTheRest && (fn.From != 0 || fn.To != 0) {
		// Lines of other slices are other jobs' to deliver, and invalid lines another
		// job's to count: a line whose time is plainly outside this slice needs no parse.
		skip = func(line []byte) bool {
			t, ok := quickTime(line)
			return ok && outside(t, fn.From, fn.To)
		}
	}
	err := parseFile(ctx, f.Path, skip, func(line uint64, raw []byte, p parsed) {
		if line%4096 == 0 {
			progress.Add(fn.Progress, 4096)
		}
		last = line
		var ie *impression.InvalidError
		switch {
		case errors.Is(p.err, impression.ErrBlank):
			return
		case errors.As(p.err, &ie):
			if !fn.Sharing.NotTheRest {
				fn.lines.Inc(ctx, 1)
				fn.invalid.Inc(ctx, 1)
				dead(deadletterio.Invalid(truncate(raw), ie.Reason, fmt.Sprintf("%s:%d", f.Path, line), origin|line&0xFFFFFFFF))
			}
			return
		}
		imp := p.imp
		if outside(imp.Time, fn.Since, fn.Until) {
			if !fn.Sharing.NotTheRest {
				fn.lines.Inc(ctx, 1)
				fn.filtered.Inc(ctx, 1)
			}
			return
		}
		if outside(imp.Time, fn.From, fn.To) {
			return
		}
		if !fn.Sharing.NotMyLines {
			fn.lines.Inc(ctx, 1)
			valid++
		}
		imp.Origin = origin | line&0xFFFFFFFF
		imp.ReceivedAt = received
		emit(mtime.FromMilliseconds(imp.Time), imp)
	})
	fn.valid.Inc(ctx, int64(valid))
	progress.Add(fn.Progress, int64(last%4096))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if fn.Sharing.NotTheRest {
			return nil
		}
		// The lines read so far stand; the rest of the file is reported, not fatal.
		fn.fileErrors.Inc(ctx, 1)
		reason := fmt.Sprintf("reading %s stopped after line %d: %v", f.Path, last, err)
		oplog.L().ErrorContext(ctx, "input file could not be read to the end", "file", f.Path, "line", last, "error", err)
		dead(deadletterio.Invalid(nil, reason, f.Path, origin))
	}
	return nil
}

// quickTime finds the top-level "time" of a JSON object line without parsing it: one
// pass that skips strings and nested values. ok is false when it cannot tell.
func quickTime(line []byte) (t int64, ok bool) {
	depth, inString := 0, false
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
			if depth == 1 && bytes.HasPrefix(line[i:], []byte(`"time":`)) {
				return leadingInt(line[i+len(`"time":`):])
			}
			inString = true
		}
	}
	return 0, false
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

// truncate keeps a dead-lettered line within the parser's limit.
func truncate(b []byte) []byte {
	if len(b) > impression.MaxLineBytes {
		return b[:impression.MaxLineBytes]
	}
	return b
}

// readLines calls fn for each line of the file at path, without its line end (LF or
// CRLF), until fn returns an error. Lines
// longer than impression.MaxLineBytes are passed cut to that length plus one byte, so
// the parser refuses them without the reader holding a huge line.
func readLines(ctx context.Context, path string, fn func([]byte) error) error {
	fs, err := filesystem.New(ctx, path)
	if err != nil {
		return err
	}
	defer fs.Close()
	rc, err := fs.OpenRead(ctx, path)
	if err != nil {
		return err
	}
	defer rc.Close()
	var r io.Reader = rc
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(rc)
		if err != nil {
			return fmt.Errorf("not a gzip file: %w", err)
		}
		defer zr.Close()
		r = zr
	}
	br := bufio.NewReaderSize(r, 256<<10)
	var long []byte // a line longer than the buffer, being gathered
	for {
		chunk, err := br.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			if len(long) <= impression.MaxLineBytes {
				long = append(long, chunk...)
			}
			continue
		case err != nil && !errors.Is(err, io.EOF):
			return err
		}
		line := chunk
		if long != nil {
			if len(long) <= impression.MaxLineBytes {
				long = append(long, chunk...)
			}
			line, long = long, nil
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(line) > 0 || err == nil {
			if ferr := fn(line); ferr != nil {
				return ferr
			}
		}
		if err != nil { // io.EOF
			return nil
		}
	}
}
