package impressionio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem"
)

// flaky:// is a file system whose reads break off: each of a file's first failures
// opens fails with a connection reset a third of the way in, as an object store's
// stream sometimes does, or (short) ends there as if the file ended, mid-line.
var flaky = &flakyFS{}

func init() {
	filesystem.Register("flaky", func(context.Context) filesystem.Interface { return flaky })
}

type flakyFS struct{ files sync.Map } // path -> *flakyFile

type flakyFile struct {
	mu       sync.Mutex
	data     []byte
	failures int  // opens left that fail
	short    bool // a failing open ends early, cleanly (io.EOF), mid-line
}

func (f *flakyFS) Close() error { return nil }

func (f *flakyFS) List(_ context.Context, glob string) ([]string, error) {
	var out []string
	f.files.Range(func(k, _ any) bool {
		if k.(string) == glob || strings.HasSuffix(glob, "*") && strings.HasPrefix(k.(string), strings.TrimSuffix(glob, "*")) {
			out = append(out, k.(string))
		}
		return true
	})
	return out, nil
}

func (f *flakyFS) file(name string) (*flakyFile, error) {
	v, ok := f.files.Load(name)
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, errors.ErrUnsupported)
	}
	return v.(*flakyFile), nil
}

func (f *flakyFS) OpenRead(_ context.Context, name string) (io.ReadCloser, error) {
	ff, err := f.file(name)
	if err != nil {
		return nil, err
	}
	ff.mu.Lock()
	defer ff.mu.Unlock()
	if ff.failures > 0 {
		ff.failures--
		if ff.short {
			return io.NopCloser(bytes.NewReader(ff.data[:len(ff.data)/3+5])), nil
		}
		return io.NopCloser(io.MultiReader(bytes.NewReader(ff.data[:len(ff.data)/3]), errReader{syscall.ECONNRESET})), nil
	}
	return io.NopCloser(bytes.NewReader(ff.data)), nil
}

func (f *flakyFS) OpenWrite(context.Context, string) (io.WriteCloser, error) {
	return nil, errors.ErrUnsupported
}

func (f *flakyFS) Size(_ context.Context, name string) (int64, error) {
	ff, err := f.file(name)
	if err != nil {
		return 0, err
	}
	return int64(len(ff.data)), nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
