package linefile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/local"
	"github.com/klauspost/compress/gzip"
)

func gz(s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	zw.Close()
	return b.Bytes()
}

func write(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// lines reads path with o and returns the lines passed and the error.
func lines(path string, o Options) ([]string, error) {
	var got []string
	err := Lines(context.Background(), path, o, func(b []byte) error {
		got = append(got, string(b))
		return nil
	})
	return got, err
}

// numbered is n numbered lines, each with its line end.
func numbered(n int) (string, []string) {
	var b strings.Builder
	var want []string
	for i := range n {
		l := fmt.Sprintf(`{"line":%d,"pad":"%x"}`, i, i*7919)
		want = append(want, l)
		b.WriteString(l + "\n")
	}
	return b.String(), want
}

// A plain file and its .gz read alike: line ends (LF, CRLF) dropped, empty lines
// passed, a last line without a line end passed; long lines whole or cut past MaxLine.
func TestLines(t *testing.T) {
	long := strings.Repeat("x", 600<<10) // longer than the read buffer
	content := "a\r\n\nb\n" + long + "\nc"
	for _, path := range []string{write(t, "f.ndjson", []byte(content)), write(t, "f.ndjson.gz", gz(content))} {
		size := fileSize(t, path)
		got, err := lines(path, Options{Size: size})
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(path), err)
		}
		if !slices.Equal(got, []string{"a", "", "b", long, "c"}) {
			t.Errorf("%s: %d lines, want the 5 written", filepath.Base(path), len(got))
		}
		got, err = lines(path, Options{Size: size, MaxLine: 1000})
		if err != nil || len(got) != 5 || got[3] != long[:1001] || got[4] != "c" {
			t.Errorf("%s with MaxLine 1000: %d lines (the long one %d bytes), %v; want it cut to 1001 bytes",
				filepath.Base(path), len(got), len(got[3]), err)
		}
	}
}

// Reading again after a failure passes over the lines already read.
func TestLinesSkip(t *testing.T) {
	content, want := numbered(1000)
	for _, path := range []string{write(t, "f.ndjson", []byte(content)), write(t, "f.ndjson.gz", gz(content))} {
		got, err := lines(path, Options{Skip: 998})
		if err != nil || !slices.Equal(got, want[998:]) {
			t.Errorf("%s skipping 998: %q, %v; want the last 2 lines", filepath.Base(path), got, err)
		}
	}
}

// Bytes all read that do not decode are a *CorruptError, after the lines before the
// damage; retrying cannot help. (Damaged deflate data may decode to garbage before
// gzip notices, so only cut files are checked for their first lines.)
func TestLinesCorrupt(t *testing.T) {
	content, want := numbered(20000)
	full := gz(content)
	damaged := slices.Clone(full)
	for i := len(full) / 2; i < len(full)/2+64; i++ {
		damaged[i] ^= 0xA5
	}
	for _, c := range []struct {
		name, says string
		data       []byte
		garbled    bool
		atLeast    int // lines passed before the error
	}{
		{"notgzip.ndjson.gz", "not a gzip file", []byte(content), false, 0},
		{"empty.ndjson.gz", "not a gzip file", nil, false, 0},
		{"trailerless.ndjson.gz", "unexpected EOF", full[:len(full)-8], false, len(want)},
		{"truncated.ndjson.gz", "unexpected EOF", full[:len(full)/2], false, 1000},
		{"damaged.ndjson.gz", "", damaged, true, 1000},
	} {
		path := write(t, c.name, c.data)
		got, err := lines(path, Options{Size: int64(len(c.data))})
		var corrupt *CorruptError
		if !errors.As(err, &corrupt) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: error %v, want a *CorruptError saying %q", c.name, err, c.says)
		}
		if len(got) < c.atLeast {
			t.Errorf("%s: %d lines passed before the error, want at least %d", c.name, len(got), c.atLeast)
		}
		if !c.garbled && !slices.Equal(got, want[:len(got)]) {
			t.Errorf("%s: the lines before the damage are not the file's first %d", c.name, len(got))
		}
	}
}

// A gzip file of several members reads as one stream, and zero bytes padding its end
// are ignored, as zcat reads it; other bytes after the padding are damage.
func TestLinesGzipMembersAndPadding(t *testing.T) {
	content, want := numbered(3000)
	half := strings.Index(content[len(content)/2:], "\n") + len(content)/2 + 1
	members := append(gz(content[:half]), gz(content[half:])...)
	for _, c := range []struct {
		name string
		data []byte
		says string // "" for no error
	}{
		{"members.ndjson.gz", members, ""},
		{"padded.ndjson.gz", append(slices.Clone(members), make([]byte, 4096)...), ""},
		{"one-zero.ndjson.gz", append(gz(content), 0), ""},
		{"padded-garbage.ndjson.gz", append(append(slices.Clone(members), make([]byte, 100)...), "junk"...), "other than zeros"},
		{"garbage.ndjson.gz", append(slices.Clone(members), "junk!junk!junk"...), "gzip"},
	} {
		path := write(t, c.name, c.data)
		got, err := lines(path, Options{Size: int64(len(c.data))})
		if c.says == "" {
			if err != nil || !slices.Equal(got, want) {
				t.Errorf("%s: %d lines, %v; want the %d lines", c.name, len(got), err, len(want))
			}
			continue
		}
		var corrupt *CorruptError
		if !errors.As(err, &corrupt) || !strings.Contains(err.Error(), c.says) || !slices.Equal(got, want) {
			t.Errorf("%s: %d lines, then %v; want all %d lines, then a *CorruptError saying %q", c.name, len(got), err, len(want), c.says)
		}
	}
}

// A body that ends before the file's size, or a file that is not there, is a failure
// to read, which reading again may cure: not a *CorruptError. The line the body cut is
// not passed.
func TestLinesReadFailure(t *testing.T) {
	content, want := numbered(20000)
	full := gz(content)
	cut := len(content)/2 + 5 // mid-line
	for _, c := range []struct {
		name    string
		data    []byte
		size    int64
		atLeast int // lines passed before the error
	}{
		{"short.ndjson", []byte(content[:cut]), int64(len(content)), 1000},
		{"short.ndjson.gz", full[:len(full)/2], int64(len(full)), 1000},
		{"short-header.ndjson.gz", full[:5], int64(len(full)), 0},
	} {
		got, err := lines(write(t, c.name, c.data), Options{Size: c.size})
		if len(got) < c.atLeast {
			t.Errorf("%s: %d lines passed before the error, want at least %d", c.name, len(got), c.atLeast)
		}
		if err == nil || errors.As(err, new(*CorruptError)) || !strings.Contains(err.Error(), "the file ended after") {
			t.Errorf("%s: error %v, want a read failure saying the file ended early", c.name, err)
		}
		if !slices.Equal(got, want[:len(got)]) {
			t.Errorf("%s: the lines passed are not the file's first %d", c.name, len(got))
		}
	}
	_, err := lines(filepath.Join(t.TempDir(), "missing.ndjson"), Options{})
	if !errors.Is(err, fs.ErrNotExist) || errors.As(err, new(*CorruptError)) {
		t.Errorf("missing file: error %v, want one that is fs.ErrNotExist", err)
	}
}

// fn's error stops reading and is returned as it is.
func TestLinesStop(t *testing.T) {
	content, _ := numbered(10)
	stop := errors.New("stop")
	n := 0
	err := Lines(context.Background(), write(t, "f.ndjson", []byte(content)), Options{}, func([]byte) error {
		if n++; n == 3 {
			return stop
		}
		return nil
	})
	if err != stop || n != 3 {
		t.Errorf("after %d lines: %v, want fn's error after 3", n, err)
	}
}

// RawBytes counts the file's bytes read, compressed ones for a .gz file: what a sample
// is scaled by.
func TestRawBytes(t *testing.T) {
	content, _ := numbered(1000)
	data := gz(content)
	f, err := Open(context.Background(), write(t, "f.ndjson.gz", data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil || string(got) != content {
		t.Fatalf("ReadAll: %d bytes, %v; want the %d written", len(got), err, len(content))
	}
	if f.RawBytes() != int64(len(data)) {
		t.Errorf("RawBytes = %d, want %d", f.RawBytes(), len(data))
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// noseek:// reads local files as gs:// reads objects: without seeking, so that a
// span's start is reached by reading up to it.
func init() {
	filesystem.Register("noseek", func(context.Context) filesystem.Interface { return noseekFS{} })
}

type noseekFS struct{}

func (noseekFS) Close() error                                   { return nil }
func (noseekFS) List(context.Context, string) ([]string, error) { return nil, errors.ErrUnsupported }
func (noseekFS) OpenWrite(context.Context, string) (io.WriteCloser, error) {
	return nil, errors.ErrUnsupported
}
func (noseekFS) OpenRead(_ context.Context, name string) (io.ReadCloser, error) {
	f, err := os.Open(strings.TrimPrefix(name, "noseek://"))
	return struct{ io.ReadCloser }{f}, err // no Seek
}
func (noseekFS) Size(_ context.Context, name string) (int64, error) {
	fi, err := os.Stat(strings.TrimPrefix(name, "noseek://"))
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// Spans cover the file, each but the last ending after a line end, and reading them
// apart passes the lines reading the whole file passes, each span's first numbered
// First: for spans of a byte and larger than the file, a line longer than the read
// buffer, CRLF, empty lines, a last line without a line end, and a line end at a cut.
func TestSpans(t *testing.T) {
	long := strings.Repeat("y", 1500<<10)
	numbers, _ := numbered(300)
	for _, content := range []string{
		"a\r\n\nb\n" + long + "\n" + numbers + "\n\nc",
		numbers, // ends with a line end
	} {
		path := write(t, "f.ndjson", []byte(content))
		size := int64(len(content))
		want, err := lines(path, Options{Size: size})
		if err != nil {
			t.Fatal(err)
		}
		for _, target := range []int64{1, 7, 100, 4096, 1 << 20, size - 1, size, 2 * size} {
			var spans []Span
			if err := Spans(context.Background(), path, size, target, func(s Span) { spans = append(spans, s) }); err != nil {
				t.Fatalf("target %d: %v", target, err)
			}
			if target <= size/4 && len(spans) < 2 || target >= size && len(spans) != 1 {
				t.Errorf("target %d of %d bytes: %d spans", target, size, len(spans))
			}
			var got []string
			next := Span{First: 1}
			for i, s := range spans {
				last := i == len(spans)-1
				if s.Start != next.Start || s.First != uint64(len(got)+1) || last != (s.End == 0) ||
					!last && (content[s.End-1] != '\n' || s.End-s.Start < min(target, size)) {
					t.Fatalf("target %d: span %d is %+v after %d lines; want it to start at %d, numbered %d, end after a line end at least %d bytes on, and only the last at 0",
						target, i, s, len(got), next.Start, len(got)+1, target)
				}
				for _, p := range []string{path, "noseek://" + path} {
					part, err := lines(p, Options{Size: size, Start: s.Start, End: s.End})
					if err != nil {
						t.Fatalf("target %d: span %+v of %s: %v", target, s, p, err)
					}
					if p == path {
						got = append(got, part...)
					}
				}
				next.Start = s.End
			}
			if !slices.Equal(got, want) {
				t.Errorf("target %d: %d spans pass %d lines; want the %d of the whole file, alike", target, len(spans), len(got), len(want))
			}
		}
	}
}

// A span whose body ends before its end is a read failure; a gzip file is one span.
func TestSpanReadFailure(t *testing.T) {
	content, _ := numbered(1000)
	path := write(t, "f.ndjson", []byte(content[:len(content)/2]))
	size := int64(len(content))
	_, err := lines(path, Options{Size: size, Start: 100, End: size - 100})
	if err == nil || errors.As(err, new(*CorruptError)) || !strings.Contains(err.Error(), "the file ended after") {
		t.Errorf("short span: error %v, want a read failure saying the file ended early", err)
	}
	_, err = lines("noseek://"+path, Options{Size: size, Start: size - 50})
	if err == nil || !strings.Contains(err.Error(), "the file ended after") {
		t.Errorf("span after a short body's end: error %v, want a read failure", err)
	}
	var spans []Span
	err = Spans(context.Background(), path, size, 1000, func(s Span) { spans = append(spans, s) })
	if err == nil || len(spans) < 2 || spans[len(spans)-1].End != 0 {
		t.Errorf("spans of a short body: %v, %v; want the error, and spans to the end, the last of which reads on (and fails there)", spans, err)
	}
	gzPath := write(t, "f.ndjson.gz", gz(content))
	if _, err := lines(gzPath, Options{Start: 100}); err == nil {
		t.Error("a span of a gzip file was read")
	}
	spans = nil
	err = Spans(context.Background(), gzPath, 100*size, 10, func(s Span) { spans = append(spans, s) })
	if err != nil || !slices.Equal(spans, []Span{{First: 1}}) {
		t.Errorf("spans of a gzip file: %v, %v; want the whole file as one", spans, err)
	}
}

// BenchmarkSpans measures cutting a file into spans, the pass that numbers their
// lines, in bytes per second (to compare with parsing: impressionio's benchmarks).
func BenchmarkSpans(b *testing.B) {
	content, _ := numbered(1 << 20)
	path := filepath.Join(b.TempDir(), "f.ndjson")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(content)))
	for b.Loop() {
		if err := Spans(context.Background(), path, int64(len(content)), 1<<20, func(Span) {}); err != nil {
			b.Fatal(err)
		}
	}
}
