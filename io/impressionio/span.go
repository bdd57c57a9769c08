package impressionio

import (
	"context"
	"fmt"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/fileio"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/outflow/outflow/internal/linefile"
	"github.com/outflow/outflow/internal/oplog"
)

func init() {
	register.DoFn3x0[context.Context, fileio.FileMetadata, func(span)](&splitFn{})
	register.Emitter1[span]()
}

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

// spans lists the files of glob and what to read of them, reshuffled twice: on a
// cluster the files are then cut into spans by as many workers as there are files,
// and the spans read by as many as there are spans, not by the one that listed them.
func spans(s beam.Scope, glob string, target int64) beam.PCollection {
	files := beam.Reshuffle(s, fileio.MatchFiles(s, glob))
	return beam.Reshuffle(s, beam.ParDo(s, &splitFn{Bytes: target}, files))
}

// splitFn cuts each file into spans of about Bytes (linefile.Spans): a large
// uncompressed one in one pass that counts line ends, a small part of what parsing
// the file costs; any other is one span.
type splitFn struct {
	Bytes int64 `json:"bytes"`
}

func (fn *splitFn) ProcessElement(ctx context.Context, f fileio.FileMetadata, emit func(span)) {
	err := linefile.Spans(ctx, f.Path, f.Size, fn.Bytes, func(s linefile.Span) {
		emit(span{Path: f.Path, Size: f.Size, Start: s.Start, End: s.End, First: s.First})
	})
	if err != nil {
		// The last span goes to the file's end: reading it retries, and fails the job
		// if the file cannot be read.
		oplog.L().WarnContext(ctx, "cutting an input file into spans stopped; the rest is read as one", "file", f.Path, "error", err)
	}
}
