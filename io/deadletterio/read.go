package deadletterio

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
	// Lines are read whole, however long: an invalid input line of any length is a
	// record, and its raw line is never cut.
	br := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			emitLine(line, f.Path, n, emit)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("deadletterio: read %s: %w", f.Path, err)
		}
	}
}

// emitLine emits the record of line n of a store file. A line that is not a record
// comes out as an invalid line holding it, byte for byte, so it is kept, not lost.
func emitLine(line []byte, path string, n int, emit func(Record)) {
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
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
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if strings.HasSuffix(f, ".gz") {
			zr, err := gzip.NewReader(bytes.NewReader(data))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if data, err = io.ReadAll(zr); err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
		}
		for _, line := range bytes.Split(data, []byte{'\n'}) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			var r Record
			if err := json.Unmarshal(line, &r); err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			recs = append(recs, r)
		}
	}
	return recs, nil
}
