package impressionio

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/fileio"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/outflow/outflow/internal/linefile"
	"github.com/outflow/outflow/internal/oplog"
)

func init() {
	register.DoFn3x0[context.Context, file, func(span)](&splitFn{})
	register.Function1x1(matched)
	register.Emitter1[span]()
}

// File is an input file as a plan listed it (Exactly).
type File struct {
	Path     string    `json:"path"`
	Size     int64     `json:"size"`
	Modified time.Time `json:"modified,omitzero"` // zero where the file system does not tell
}

// file is an input file as the reader's elements carry it.
type file struct {
	Path     string
	Size     int64
	Modified int64 // Unix ns; 0: unknown
	Pinned   bool  // listed by a plan: it must still be so (span.check)
}

// matched is a file the glob matched when the job ran.
func matched(f fileio.FileMetadata) file { return file{Path: f.Path, Size: f.Size} }

// spanBytes is how much of a large uncompressed input file one element reads, so that
// on a cluster several workers read the file (Beam's textio splits by 64 MiB too). A
// gzip file cannot be entered mid-stream and is read whole.
const spanBytes = 64 << 20

// span is what one element of a reader reads: a whole file, or a span of a large
// uncompressed one (linefile.Span) whose lines are numbered as in the whole file.
type span struct {
	Path  string `json:"path"`
	Size  int64  `json:"size"` // the file's
	Start int64  `json:"start"`
	End   int64  `json:"end"` // 0: to the file's end
	First uint64 `json:"first"`
	// Modified (Unix ns, 0 unknown) and Pinned: the file as a plan listed it.
	Modified int64 `json:"modified,omitempty"`
	Pinned   bool  `json:"pinned,omitempty"`
}

// String names the span in messages: the file, and its bytes unless it is whole.
func (sp span) String() string {
	if sp.Start == 0 && sp.End == 0 {
		return sp.Path
	}
	return fmt.Sprintf("%s from byte %d", sp.Path, sp.Start)
}

func (sp span) options() linefile.Options {
	return linefile.Options{Size: sp.Size, Start: sp.Start, End: sp.End}
}

// spans lists the files of glob, or the files given, and what to read of them,
// reshuffled twice: on a cluster the files are then cut into spans by as many
// workers as there are files, and the spans read by as many as there are spans, not
// by the one that listed them.
func spans(s beam.Scope, glob string, pinned []File, target int64) beam.PCollection {
	var files beam.PCollection
	if pinned != nil {
		list := make([]file, len(pinned))
		for i, f := range pinned {
			list[i] = file{Path: f.Path, Size: f.Size, Pinned: true}
			if !f.Modified.IsZero() {
				list[i].Modified = f.Modified.UnixNano()
			}
		}
		files = beam.CreateList(s, list)
	} else {
		files = beam.ParDo(s, matched, fileio.MatchFiles(s, glob))
	}
	return beam.Reshuffle(s, beam.ParDo(s, &splitFn{Bytes: target}, beam.Reshuffle(s, files)))
}

// splitFn cuts each file into spans of about Bytes (linefile.Spans): a large
// uncompressed one in one pass that counts line ends, a small part of what parsing
// the file costs; any other is one span.
type splitFn struct {
	Bytes int64 `json:"bytes"`
}

func (fn *splitFn) ProcessElement(ctx context.Context, f file, emit func(span)) {
	err := linefile.Spans(ctx, f.Path, f.Size, fn.Bytes, func(s linefile.Span) {
		emit(span{Path: f.Path, Size: f.Size, Start: s.Start, End: s.End, First: s.First, Modified: f.Modified, Pinned: f.Pinned})
	})
	if err != nil {
		// The last span goes to the file's end: reading it retries, and fails the job
		// if the file cannot be read.
		oplog.L().WarnContext(ctx, "cutting an input file into spans stopped; the rest is read as one", "file", f.Path, "error", err)
	}
}

// errChanged is a pinned input file found otherwise than the plan listed it.
var errChanged = errors.New("changed since the backfill was planned")

// check fails when sp's file is pinned and no longer as its plan listed it: another
// size or modification time, or gone.
func (sp span) check(ctx context.Context) error {
	if !sp.Pinned {
		return nil
	}
	fs, err := filesystem.New(ctx, sp.Path)
	if err != nil {
		return fmt.Errorf("impressionio: input file %s: %w", sp.Path, err)
	}
	defer fs.Close()
	size, err := fs.Size(ctx, sp.Path)
	if err != nil {
		return fmt.Errorf("impressionio: input file %s, listed by the plan, cannot be found now: %w (%w)", sp.Path, err, errChanged)
	}
	var modified int64
	if lm, ok := fs.(filesystem.LastModifiedGetter); ok && sp.Modified != 0 {
		t, err := lm.LastModified(ctx, sp.Path)
		if err != nil {
			return fmt.Errorf("impressionio: input file %s: %w", sp.Path, err)
		}
		modified = t.UnixNano()
	}
	if size != sp.Size || modified != sp.Modified {
		return fmt.Errorf("impressionio: input file %s %w (%d bytes, modified %s; now %d bytes, modified %s): "+
			"its job read none of it, or stopped; run the backfill again to read the files as they are now",
			sp.Path, errChanged, sp.Size, stamp(sp.Modified), size, stamp(modified))
	}
	return nil
}

// stamp shows a modification time of Unix ns, 0 unknown.
func stamp(ns int64) string {
	if ns == 0 {
		return "unknown"
	}
	return time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
}
