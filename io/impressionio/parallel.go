package impressionio

import (
	"context"
	"runtime"

	"golang.org/x/sync/errgroup"

	"github.com/outflow/outflow/internal/impression"
)

// Parsing is most of a backfill's CPU, and prism runs all of a stage's elements in
// one bundle, on one goroutine. So each file is parsed by a few workers while the
// bundle's goroutine emits the results, in file order: emitting must stay on that
// goroutine, and order keeps "first seen" and every run alike.

const batchLines = 512

// batch is a run of consecutive lines of one file.
type batch struct {
	first  uint64 // number of the first line, from 1
	buf    []byte // the lines, back to back
	ends   []int  // where each line ends in buf
	parsed []parsed
	done   chan struct{} // closed when parsed is filled
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

// parseFile reads the file at path and calls handle for each line, in order, on the
// calling goroutine, with its number, raw bytes and parse result. It returns the
// error that stopped reading, if any; the lines before it have been handled.
// skip, when set, is asked first of each line: a line it skips is passed on as blank,
// without being parsed.
func parseFile(ctx context.Context, path string, skip func([]byte) bool, handle func(line uint64, raw []byte, p parsed)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := max(1, runtime.GOMAXPROCS(0)-1)
	todo := make(chan *batch, workers)
	inOrder := make(chan *batch, 2*workers)
	g, gctx := errgroup.WithContext(ctx)

	var readErr error
	g.Go(func() error { // reader: splits the file into batches
		defer close(todo)
		defer close(inOrder)
		b := &batch{first: 1, done: make(chan struct{})}
		send := func() error {
			for _, ch := range []chan *batch{inOrder, todo} {
				select {
				case ch <- b:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			b = &batch{first: b.first + uint64(len(b.ends)), done: make(chan struct{})}
			return nil
		}
		readErr = readLines(gctx, path, func(line []byte) error {
			b.buf = append(b.buf, line...)
			b.ends = append(b.ends, len(b.buf))
			if len(b.ends) == batchLines {
				return send()
			}
			return nil
		})
		if len(b.ends) > 0 {
			send()
		}
		return nil
	})
	for range workers {
		g.Go(func() error {
			for b := range todo {
				b.parsed = make([]parsed, len(b.ends))
				for i := range b.parsed {
					if skip != nil && skip(b.line(i)) {
						b.parsed[i].err = impression.ErrBlank
						continue
					}
					b.parsed[i].imp, b.parsed[i].err = impression.Parse(b.line(i))
				}
				close(b.done)
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
		for i, p := range b.parsed {
			handle(b.first+uint64(i), b.line(i), p)
		}
	}
	g.Wait()
	return readErr
}
