package deadletterio

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/fileio"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/outflow/outflow/internal/linefile"
)

func init() {
	register.DoFn3x1[context.Context, fileio.FileMetadata, func(Record), error](&readFn{})
	register.Emitter1[Record]()
}

// Read reads the dead-letter files matching glob (NDJSON, .gz gunzipped). Records come
// out as they were written, file errors and raw lines (RawBase64 included) unchanged.
// A line that is not a record comes out as an invalid line holding it, byte for byte,
// so it is kept, not lost.
//
// Out: PCollection<Record>.
func Read(s beam.Scope, glob string) beam.PCollection {
	s = s.Scope("deadletterio.Read")
	return beam.ParDo(s, &readFn{}, fileio.MatchFiles(s, glob))
}

type readFn struct{}

func (readFn) ProcessElement(ctx context.Context, f fileio.FileMetadata, emit func(Record)) error {
	// Lines are read whole, however long (no MaxLine): an invalid input line of any
	// length is a record, and its raw line is never cut. The listed size makes a
	// body that ends early (a dropped connection) a read error rather than a file
	// whose last records are silently missing.
	n := 0
	err := linefile.Lines(ctx, f.Path, linefile.Options{Size: f.Size}, func(line []byte) error {
		n++
		emitLine(line, f.Path, n, emit)
		return nil
	})
	if err != nil {
		return fmt.Errorf("deadletterio: read %s: %w", f.Path, err)
	}
	return nil
}

// emitLine emits the record of line n of a store file, given without its line end. A
// line that is not a record comes out as an invalid line holding it, byte for byte,
// so it is kept, not lost.
func emitLine(line []byte, path string, n int, emit func(Record)) {
	trimmed := bytes.TrimSpace(line)
	if len(trimmed) == 0 {
		return
	}
	var rec Record
	err := json.Unmarshal(trimmed, &rec)
	switch {
	case err != nil:
	case trimmed[0] != '{':
		err = errors.New("not a JSON object")
	case rec.Reason == "" && rec.Impression == nil && len(rec.RawBytes()) == 0 && !rec.FileError:
		// Some other JSON object (an impression line, say): decoded as a record it would
		// come out empty, and the line would be lost.
		err = errors.New("no reason, impression or raw line")
	}
	if err != nil {
		rec = Invalid(line, fmt.Sprintf("not a dead-letter record (%v)", err), fmt.Sprintf("%s:%d", path, n), 0)
	}
	emit(rec)
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

// ReadLocal returns the records of the local dead-letter files matching glob (.gz
// ones gunzipped), for tools and tests that look at what a run left.
func ReadLocal(glob string) ([]Record, error) {
	files, err := filepath.Glob(glob)
	if err != nil {
		return nil, err
	}
	var recs []Record
	for _, f := range files {
		err := linefile.Lines(context.Background(), f, linefile.Options{}, func(line []byte) error {
			if len(bytes.TrimSpace(line)) == 0 {
				return nil
			}
			var r Record
			if err := json.Unmarshal(line, &r); err != nil {
				return err
			}
			recs = append(recs, r)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("deadletterio: read %s: %w", f, err)
		}
	}
	return recs, nil
}
