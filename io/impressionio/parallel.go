package impressionio

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/oplog"
)

// Parsing is most of a backfill's CPU, and prism runs all of a stage's elements in
// one bundle, on one goroutine. So each file is parsed by a few workers while the
// bundle's goroutine emits the results, in file order: emitting must stay on that
// goroutine, and order keeps "first seen" and every run alike.

// A batch holds batchLines lines, or fewer when they reach batchBytes (long lines).
const (
	batchLines = 512
	batchBytes = 4 << 20
)

// Reading a file is tried readAttempts times, waiting retryWait, then twice as long
// each time (7.5 s in all), before the job fails: a connection reset or a 503 while
// streaming an object is usually gone by then.
const readAttempts = 5

var retryWait = 500 * time.Millisecond

// retryable reports whether reading again may succeed: not for damaged content, nor
// for a path that is missing, a directory or not permitted.
func retryable(err error) bool {
	return err != nil && !errors.As(err, new(*CorruptError)) && !errors.Is(err, fs.ErrNotExist) &&
		!errors.Is(err, fs.ErrPermission) && !errors.Is(err, syscall.EISDIR)
}

// batch is a run of consecutive lines of one file.
type batch struct {
	first  uint64 // number of the first line, from 1
	buf    []byte // the lines, back to back
	ends   []int  // where each line ends in buf
	parsed []parsed
	done   chan struct{} // closed when parsed is filled
	// then, if a worker set it, runs on the calling goroutine after the batch's
	// lines were handled: for output that must leave there.
	then func()
}

// fileWork is what parseFile does besides parsing.
type fileWork struct {
	// skip, when set, is asked first of each line: a line it skips is passed on as
	// blank, without being parsed.
	skip func([]byte) bool
	// work, when set, runs in the parsing worker numbered worker after it parsed b.
	work func(worker int, b *batch)
	// finish, when set, runs in each parsing worker after its last batch.
	finish func(worker int)
	// workers is how many goroutines parse; 0: GOMAXPROCS-1, the calling goroutine
	// taking the last core.
	workers int
}

func (b *batch) line(i int) []byte {
	start := 0
	if i > 0 {
		start = b.ends[i-1]
	}
	return b.buf[start:b.ends[i]]
}

type parsed struct {
	imp impression.Impression
	err error // nil, impression.ErrBlank or *impression.InvalidError
}

// parseFile reads the span sp of a file and calls handle for each line, in order,
// on the calling goroutine, with its number in the file, raw bytes and parse result.
// A read that fails is retried (readAttempts in all), going on after the lines
// already read; the error that finally stopped reading is returned, after the lines
// before it have been handled: a *CorruptError for damaged content, which is not
// retried. fw says what else to do, and on how many workers.
func parseFile(ctx context.Context, sp span, fw fileWork, handle func(line uint64, raw []byte, p *parsed)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := fw.workers
	if workers <= 0 {
		workers = max(1, runtime.GOMAXPROCS(0)-1)
	}
	todo := make(chan *batch, workers)
	inOrder := make(chan *batch, 2*workers)
	g, gctx := errgroup.WithContext(ctx)

	// Batches once handled are used again, their buffers with them: allocating each
	// afresh was a quarter of a backfill's allocations, and growing each from empty 5%
	// of its CPU.
	free := make(chan *batch, 3*workers+1)
	newBatch := func(first uint64) *batch {
		select {
		case b := <-free:
			b.first, b.buf, b.ends, b.then, b.done = first, b.buf[:0], b.ends[:0], nil, make(chan struct{})
			return b
		default:
			return &batch{first: first, done: make(chan struct{}), ends: make([]int, 0, batchLines)}
		}
	}
	var readErr error
	g.Go(func() error { // reader: splits the file into batches
		defer close(todo)
		defer close(inOrder)
		b := newBatch(sp.First)
		send := func() error {
			for _, ch := range []chan *batch{inOrder, todo} {
				select {
				case ch <- b:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			b = newBatch(b.first + uint64(len(b.ends)))
			return nil
		}
		var read uint64 // lines read, over every attempt
		for attempt := 1; ; attempt++ {
			readErr = readLines(gctx, sp, read, func(line []byte) error {
				read++
				b.buf = append(b.buf, line...)
				b.ends = append(b.ends, len(b.buf))
				if len(b.ends) == batchLines || len(b.buf) >= batchBytes {
					return send()
				}
				return nil
			})
			if !retryable(readErr) || gctx.Err() != nil || attempt == readAttempts {
				break
			}
			wait := retryWait << (attempt - 1)
			oplog.L().WarnContext(ctx, "reading an input file failed; reading on from where it stopped", "file", sp,
				"line", read, "attempt", attempt, "retry_in", wait, "error", readErr)
			select {
			case <-time.After(wait):
			case <-gctx.Done():
			}
		}
		if readErr != nil && !errors.As(readErr, new(*CorruptError)) {
			readErr = fmt.Errorf("stopped after line %d, %d attempts: %w", read, readAttempts, readErr)
		}
		if len(b.ends) > 0 {
			send()
		}
		return nil
	})
	for w := range workers {
		g.Go(func() error {
			for b := range todo {
				b.parsed = slices.Grow(b.parsed[:0], len(b.ends))[:len(b.ends)]
				for i := range b.parsed {
					if fw.skip != nil && fw.skip(b.line(i)) {
						b.parsed[i] = parsed{err: impression.ErrBlank}
						continue
					}
					b.parsed[i].imp, b.parsed[i].err = impression.Parse(b.line(i))
				}
				if fw.work != nil {
					fw.work(w, b)
				}
				close(b.done)
			}
			if fw.finish != nil {
				fw.finish(w)
			}
			return nil
		})
	}
	for b := range inOrder {
		select {
		case <-b.done:
		case <-ctx.Done():
			cancel()
			g.Wait()
			return ctx.Err()
		}
		for i := range b.parsed {
			handle(b.first+uint64(i), b.line(i), &b.parsed[i])
		}
		if b.then != nil {
			b.then()
		}
		select { // handle copied what it keeps
		case free <- b:
		default:
		}
	}
	g.Wait()
	return readErr
}
