// Package linefile opens a file by path through Beam's file systems, gunzips it when
// its name ends in .gz, and reads it by line, telling a failure to read its bytes
// from content that does not decode.
package linefile

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem"
	"github.com/klauspost/compress/gzip"
)

// The schemes a path may have are those registered with Beam's filesystem package by
// the caller's imports (local, gs://, s3:// through io/s3io): this package registers
// none, so a caller gets only the clients it asked for.

// CorruptError is a file whose bytes were all read but do not decode: not gzip, or a
// truncated or damaged gzip stream. Retrying cannot help.
type CorruptError struct{ Err error }

func (e *CorruptError) Error() string { return e.Err.Error() }
func (e *CorruptError) Unwrap() error { return e.Err }

// Reader reads the content of a file: its bytes, gunzipped if its name ends in .gz.
// Read ends with io.EOF only when the file ended where it should; any other error is
// either a failure to read the file's bytes (a reset connection, a body shorter than
// the file), which reading again may cure, or a *CorruptError.
type Reader struct {
	fs  filesystem.Interface
	rc  io.ReadCloser
	raw rawReader
	// start and end are the bytes read: [start, end), end 0 when the size is unknown.
	start, end int64
	gz         *gzip.Reader
	zb         *bufio.Reader // what gz reads from: its members are read one at a time
	r          io.Reader     // the content; nil until a .gz file's header is read
	err        error         // the error Read returned, returned again
}

// Open opens the file at path. size is its size when known, so that a body that
// ends early is a read failure and not the file's end; 0 if unknown, or not to check.
// A .gz file's header is read on the first Read, so that every error about the
// content comes from Read.
func Open(ctx context.Context, path string, size int64) (*Reader, error) {
	return open(ctx, path, size, 0, 0)
}

// offsetOpener is a file system that opens a file at an offset without reading the
// bytes before it: s3io's, with a ranged GET.
type offsetOpener interface {
	OpenReadAt(ctx context.Context, path string, offset int64) (io.ReadCloser, error)
}

// open opens the bytes [start, end) of the file at path; end 0: to its end. A span
// that does not start at 0 is of an uncompressed file. Its start is reached by
// seeking (local files), by asking the file system for it (offsetOpener), or else
// by reading up to it (gs://).
func open(ctx context.Context, path string, size, start, end int64) (*Reader, error) {
	gzipped := strings.HasSuffix(path, ".gz")
	if gzipped && (start != 0 || end != 0) {
		return nil, fmt.Errorf("linefile: %s: a gzip file is read whole, not from byte %d", path, start)
	}
	fs, err := filesystem.New(ctx, path)
	if err != nil {
		return nil, err
	}
	var rc io.ReadCloser
	if oo, ok := fs.(offsetOpener); ok && start > 0 {
		rc, err = oo.OpenReadAt(ctx, path, start)
	} else if rc, err = fs.OpenRead(ctx, path); err == nil && start > 0 {
		if err = skipTo(rc, start); err != nil {
			rc.Close()
		}
	}
	if err != nil {
		fs.Close()
		return nil, err
	}
	f := &Reader{fs: fs, rc: rc, raw: rawReader{r: rc}, start: start, end: end}
	if end != 0 {
		f.raw.limit = end - start // the span's end, where the next span starts
	} else {
		f.end = size // a body that ends before is short; one that goes on is read on
	}
	if !gzipped {
		f.r = &f.raw
	}
	return f, nil
}

// nextMember starts the gzip member that follows the one just read, if any. Zero bytes
// after the last member are padding, which gzip -d ignores too; anything else after
// them is damage.
func (f *Reader) nextMember() (more bool, err error) {
	padded := false
	for {
		c, err := f.zb.ReadByte()
		switch {
		case errors.Is(err, io.EOF):
			return false, nil
		case err != nil:
			return false, err
		case c == 0:
			padded = true
			continue
		case padded:
			return false, errors.New("gzip: bytes other than zeros after the padding that follows the last member")
		}
		f.zb.UnreadByte()
		if err := f.gz.Reset(f.zb); err != nil {
			return false, err
		}
		f.gz.Multistream(false)
		return true, nil
	}
}

// skipTo moves rc, just opened, to byte start of its file.
func skipTo(rc io.ReadCloser, start int64) error {
	if sk, ok := rc.(io.Seeker); ok {
		_, err := sk.Seek(start, io.SeekStart)
		return err
	}
	n, err := io.CopyN(io.Discard, rc, start)
	if err == io.EOF {
		err = fmt.Errorf("the file ended after %d bytes, before byte %d where reading was to start", n, start)
	}
	return err
}

// Read reads the file's content, as io.Reader does.
func (f *Reader) Read(b []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	n, err := f.read(b)
	f.err = err
	return n, err
}

func (f *Reader) read(b []byte) (int, error) {
	if f.r == nil {
		f.zb = bufio.NewReaderSize(&f.raw, 64<<10)
		zr, err := gzip.NewReader(f.zb)
		if err != nil {
			if f.raw.err == nil && f.short() == nil {
				return 0, &CorruptError{fmt.Errorf("not a gzip file: %w", err)}
			}
			return 0, f.classify(err)
		}
		zr.Multistream(false)
		f.gz, f.r = zr, zr
	}
	n, err := f.r.Read(b)
	if f.gz != nil && errors.Is(err, io.EOF) {
		// The end of a gzip member: another may follow.
		more, merr := f.nextMember()
		switch {
		case merr != nil:
			return n, f.classify(merr)
		case more && n > 0:
			return n, nil
		case more:
			return f.read(b)
		}
	}
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, io.EOF):
		if serr := f.short(); serr != nil {
			return n, serr // not the end: the last line may be cut, so it is not passed on
		}
		return n, io.EOF // unwrapped, as readers of an io.Reader expect
	}
	return n, f.classify(err)
}

// short is the error of a body that ended before the file's size, or the end of
// the span read: a read failure.
func (f *Reader) short() error {
	if f.raw.eof && f.end > 0 && f.start+f.raw.n < f.end {
		return fmt.Errorf("the file ended after %d of its %d bytes", f.start+f.raw.n, f.end)
	}
	return nil
}

// classify tells a read failure from damaged content, once reading stopped on err.
func (f *Reader) classify(err error) error {
	if f.raw.err != nil {
		return f.raw.err
	}
	if serr := f.short(); serr != nil {
		return fmt.Errorf("%w: %w", serr, err)
	}
	return &CorruptError{err}
}

// RawBytes is how many bytes of the file were read so far: compressed ones for a .gz
// file, including what the decompressor read ahead.
func (f *Reader) RawBytes() int64 { return f.raw.n }

// Close closes the file, then its file system: a gs:// one closes its client, which
// must outlive the reading.
func (f *Reader) Close() error {
	if f.gz != nil {
		f.gz.Close() // only reports the decoding error Read already returned
	}
	err := f.rc.Close()
	f.fs.Close()
	return err
}

// Options says how Lines reads. The zero value reads every line whole, from the first,
// without checking the body's length.
type Options struct {
	// Size is the file's size when known (Open); 0 if unknown.
	Size int64
	// Start and End are the bytes to read, [Start, End), of an uncompressed file: a
	// span that Spans made, starting on a line's start and ending after a line end.
	// End 0: to the file's end.
	Start, End int64
	// Skip is how many lines to pass over first: those read before a failed read, when
	// reading again.
	Skip uint64
	// MaxLine bounds how much of one line is held: a longer line is passed cut to
	// MaxLine+1 bytes, so that fn can tell it was cut. 0: lines are passed whole,
	// however long.
	MaxLine int
}

// Lines calls fn for each line of the file at path after the first o.Skip, without
// its line end (LF or CRLF), until fn returns an error, which Lines returns. An empty
// line is passed; a last line without a line end is passed unless empty.
//
// A failure to open or read the file's bytes (open, a reset connection, a body shorter
// than o.Size) is returned as it is, or as ctx's error when ctx is done; a failure to
// decode bytes that were all read is a *CorruptError. Either comes after the lines
// before it were passed.
func Lines(ctx context.Context, path string, o Options, fn func([]byte) error) error {
	f, err := open(ctx, path, o.Size, o.Start, o.End)
	if err != nil {
		return err
	}
	defer f.Close()
	var fnErr error
	err = Scan(f, o, func(line []byte) error { fnErr = fn(line); return fnErr })
	if err != nil && err != fnErr && f.raw.err == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Scan calls fn for each line read from r, as Lines does for a file, with o's Skip
// and MaxLine, until fn returns an error; a read error is returned as it is.
func Scan(r io.Reader, o Options, fn func([]byte) error) error {
	br := bufio.NewReaderSize(r, 256<<10)
	var long []byte // a line longer than the buffer, being gathered
	gather := func(chunk []byte) {
		switch {
		case o.MaxLine <= 0:
			long = append(long, chunk...)
		case len(long) <= o.MaxLine:
			long = append(long, chunk[:min(len(chunk), o.MaxLine+1-len(long))]...)
		}
	}
	for n := uint64(0); ; {
		chunk, err := br.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			gather(chunk)
			continue
		case err != nil && err != io.EOF: // not errors.Is: a CorruptError may wrap io.EOF
			return err
		}
		line := chunk
		if long != nil {
			gather(chunk)
			line, long = long, nil
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(line) > 0 || err == nil {
			if n++; n > o.Skip {
				if ferr := fn(line); ferr != nil {
					return ferr
				}
			}
		}
		if err != nil { // io.EOF
			return nil
		}
	}
}

// rawReader counts the bytes read from a file and keeps the first read error, so a
// decoding error can be told from a read error under it.
type rawReader struct {
	r     io.Reader
	n     int64
	limit int64 // when not 0, the body ends after limit bytes
	eof   bool
	err   error
}

func (c *rawReader) Read(b []byte) (int, error) {
	if c.limit > 0 {
		if c.n >= c.limit {
			c.eof = true
			return 0, io.EOF
		}
		b = b[:min(int64(len(b)), c.limit-c.n)]
	}
	n, err := c.r.Read(b)
	c.n += int64(n)
	switch {
	case errors.Is(err, io.EOF):
		c.eof = true
	case err != nil && c.err == nil:
		c.err = err
	}
	return n, err
}

// Span is part of an uncompressed file: the lines that start in its bytes
// [Start, End) (End 0: to the file's end), the first of them line First of the file,
// counting from 1. Options.Start and Options.End read one.
type Span struct {
	Start, End int64
	First      uint64
}

// Spans cuts the file at path, of size bytes, into spans of about target bytes,
// each but the last ending just after a line end, and calls fn with each, in order.
// It reads the file once, counting line ends to number each span's first line:
// several times faster than parsing it, and what lets the spans be read apart with
// every line numbered as reading the whole file would. A file smaller than twice
// target (or of unknown size, or target 0) is one span, passed without reading it, as
// is a gzip file, which cannot be entered mid-stream.
//
// The spans passed cover the file whatever happens: when reading fails, the span
// being scanned is passed as going to the file's end, and the error is returned.
func Spans(ctx context.Context, path string, size, target int64, fn func(Span)) error {
	sp := Span{First: 1}
	defer func() { fn(sp) }() // the last, to the file's end
	if target <= 0 || size < 2*target || strings.HasSuffix(path, ".gz") {
		return nil
	}
	f, err := Open(ctx, path, size)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	cut := target   // the span ends after the first line end at or after byte cut-1
	var off int64   // bytes before b
	var ends uint64 // line ends before b
	for {
		n, err := f.Read(buf)
		b := buf[:n]
		for len(b) > 0 {
			i := -1
			if from := max(0, cut-1-off); from < int64(len(b)) {
				if i = bytes.IndexByte(b[from:], '\n'); i >= 0 {
					i += int(from)
				}
			}
			if i < 0 || off+int64(i)+1 >= size { // no cut here, or only at the file's end
				ends += uint64(bytes.Count(b, []byte{'\n'}))
				off += int64(len(b))
				break
			}
			ends += uint64(bytes.Count(b[:i+1], []byte{'\n'}))
			off += int64(i) + 1
			b = b[i+1:]
			fn(Span{Start: sp.Start, End: off, First: sp.First})
			sp = Span{Start: off, First: ends + 1}
			cut = off + target
		}
		switch {
		case err == io.EOF:
			return nil
		case err != nil:
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		}
	}
}
