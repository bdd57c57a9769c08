package encode

import (
	"sync"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/outflow/outflow/internal/impression"
)

func init() {
	register.Combiner1[Chunk](&mergeFn{})
}

// A Chunker gathers encoded impressions into Chunks per key and window, outside
// Beam: a reader that routes and encodes as it parses (impressionio.ReadObjects)
// hands the runner a few chunks instead of every impression, which is most of what
// a backfill to object stores costs in Beam. Chunks of one key and window from
// several Chunkers are merged by MergeChunks. A Chunker is not safe for concurrent
// use: keep one per goroutine.
type Chunker struct {
	open map[chunkKey]*Chunk
	held int // raw and compressed bytes held
}

type chunkKey struct {
	key   string
	start int64 // window start, Unix ms
}

// KeyedChunk is a chunk of one key and window.
type KeyedChunk struct {
	Key   string
	Start time.Time // the window's start
	Chunk Chunk
}

// NewChunker returns an empty Chunker.
func NewChunker() *Chunker { return &Chunker{open: map[chunkKey]*Chunk{}} }

// Add encodes imp in format f into the chunk of key and the window of size window
// that holds imp's time.
func (c *Chunker) Add(key string, window time.Duration, f Format, imp *impression.Impression) {
	w := window.Milliseconds()
	k := chunkKey{key, imp.Time - imp.Time%w} // fixed windows start at multiples of w; Time >= 0
	ch := c.open[k]
	if ch == nil {
		ch = &Chunk{raw: rawBuffers.Get().([]byte)[:0]}
		c.open[k] = ch
	}
	before, index := len(ch.raw), len(ch.Index)
	ch.raw = Append(f, ch.raw, imp)
	ch.appendEntry(imp.ID, imp.Origin, len(ch.raw)-before)
	c.held += len(ch.raw) - before + len(ch.Index) - index
	if raw := ch.raw; len(raw) >= memberSize {
		ch.flush()
		ch.raw = raw[:0] // the member is a compressed copy: the buffer can be reused
		c.held += len(ch.Members[len(ch.Members)-1]) - len(raw)
	}
}

// rawBuffers hold a chunk's records until they are compressed. A reader opens a
// chunk per target, shard and window of each file it reads, and growing each from
// empty was a tenth of a backfill's CPU (allocating, clearing and copying).
var rawBuffers = sync.Pool{New: func() any { return make([]byte, 0, memberSize+memberSize/8) }}

// Held is about how many bytes the chunker holds.
func (c *Chunker) Held() int { return c.held }

// Drain compresses and returns every chunk the chunker holds, and empties it.
func (c *Chunker) Drain() []KeyedChunk {
	out := make([]KeyedChunk, 0, len(c.open))
	for k, ch := range c.open {
		raw := ch.raw
		ch.flush()
		if cap(raw) <= 2*memberSize { // not one grown for a huge record
			rawBuffers.Put(raw[:0])
		}
		out = append(out, KeyedChunk{Key: k.key, Start: time.UnixMilli(k.start).UTC(), Chunk: *ch})
	}
	clear(c.open)
	c.held = 0
	return out
}

// MergeChunks merges the chunks of each key and window into one, as Objects does
// for impressions: for chunks that readers built (Chunker), timestamped within their
// window.
//
// In: PCollection<KV<string, Chunk>>; out: PCollection<KV<string, Chunk>>.
func MergeChunks(s beam.Scope, chunks beam.PCollection) beam.PCollection {
	s = s.Scope("encode.MergeChunks")
	return beam.CombinePerKey(s, &mergeFn{}, chunks)
}

// mergeFn is the CombineFn behind MergeChunks.
type mergeFn struct{}

func (fn *mergeFn) MergeAccumulators(a, b Chunk) Chunk { return merge(a, b) }
