package deadletterio

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/fileio"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/klauspost/compress/gzip"
)

func init() {
	register.DoFn3x1[context.Context, fileio.FileMetadata, func(Record), error](&readFn{})
	register.Emitter1[Record]()
}

// Read reads the dead-letter files matching glob (NDJSON, .gz gunzipped). A line that
// is not a record comes out as one holding it in Raw, so it is kept, not lost.
//
// Out: PCollection<Record>.
func Read(s beam.Scope, glob string) beam.PCollection {
	s = s.Scope("deadletterio.Read")
	return beam.ParDo(s, &readFn{}, fileio.MatchFiles(s, glob))
}

type readFn struct{}

func (readFn) ProcessElement(ctx context.Context, f fileio.FileMetadata, emit func(Record)) error {
	fs, err := filesystem.New(ctx, f.Path)
	if err != nil {
		return err
	}
	defer fs.Close()
	rc, err := fs.OpenRead(ctx, f.Path)
	if err != nil {
		return fmt.Errorf("deadletterio: open %s: %w", f.Path, err)
	}
	defer rc.Close()
	var r io.Reader = rc
	if strings.HasSuffix(f.Path, ".gz") {
		zr, err := gzip.NewReader(rc)
		if err != nil {
			return fmt.Errorf("deadletterio: %s: %w", f.Path, err)
		}
		r = zr
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 64<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var rec Record
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			rec = Record{Reason: fmt.Sprintf("not a dead-letter record (%v)", err), Raw: line,
				Source: fmt.Sprintf("%s:%d", f.Path, n)}
		}
		emit(rec)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("deadletterio: read %s: %w", f.Path, err)
	}
	return nil
}

// Move moves a file of the store, within one file system (local, s3:// or gs://).
func Move(ctx context.Context, from, to string) error {
	fs, err := filesystem.New(ctx, from)
	if err != nil {
		return err
	}
	defer fs.Close()
	if !strings.Contains(to, "://") {
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
	}
	if err := filesystem.Rename(ctx, fs, from, to); err != nil {
		return fmt.Errorf("deadletterio: move %s to %s: %w", from, to, err)
	}
	return nil
}

// List returns the files matching glob.
func List(ctx context.Context, glob string) ([]string, error) {
	fs, err := filesystem.New(ctx, glob)
	if err != nil {
		return nil, err
	}
	defer fs.Close()
	return fs.List(ctx, glob)
}

// Clean normalizes a store location: no trailing slash, and a local path cleaned as
// listing returns it.
func Clean(uri string) string {
	if strings.Contains(uri, "://") {
		return strings.TrimSuffix(uri, "/")
	}
	return filepath.Clean(uri)
}
