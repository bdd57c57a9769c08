package encode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"sync"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/google/uuid"
	"github.com/klauspost/compress/gzip"

	"github.com/outflow/outflow/internal/impression"
)

func init() {
	register.Combiner2[Chunk, impression.Impression](&chunkFn{})
	beam.RegisterCoder(reflect.TypeOf(Chunk{}), marshalChunk, unmarshalChunk)
}

// Chunk is part of a data object, already encoded and compressed: the accumulator
// that Objects builds before the shuffle, so the runner moves a few compressed
// blobs per key and window instead of every impression.
//
// Records are kept in order; Index holds, per record, its impression id, origin and
// encoded length, so duplicates can be found and dropped without decoding records.
type Chunk struct {
	N       int      // records
	Index   []byte   // N entries of indexEntry bytes
	Members [][]byte // gzip members holding the records, in order
	raw     []byte   // records not yet compressed
}

const (
	indexEntry = 16 + 8 + 4 // id, origin, record length
	// memberSize is how much raw data goes in one gzip member: past gzip's 32 KiB
	// window, larger members barely compress better.
	memberSize = 64 << 10
)

// Objects encodes and compresses keyed, windowed impressions into one Chunk per key
// and window, in format f (NDJSON or CSV).
//
// In: PCollection<KV<string, impression.Impression>>; out: PCollection<KV<string, Chunk>>.
func Objects(s beam.Scope, f Format, col beam.PCollection) beam.PCollection {
	s = s.Scope("encode.Objects")
	return beam.CombinePerKey(s, &chunkFn{Format: f}, col)
}

// chunkFn is the CombineFn behind Objects.
type chunkFn struct {
	Format Format `json:"format"`
}

func (fn *chunkFn) CreateAccumulator() Chunk { return Chunk{} }

func (fn *chunkFn) AddInput(c Chunk, imp impression.Impression) Chunk {
	before := len(c.raw)
	c.raw = Append(fn.Format, c.raw, &imp)
	c.Index = appendIndex(c.Index, imp.ID, imp.Origin, len(c.raw)-before)
	c.N++
	if len(c.raw) >= memberSize {
		c.flush()
	}
	return c
}

func (fn *chunkFn) MergeAccumulators(a, b Chunk) Chunk { return merge(a, b) }

// merge appends b's records to a's.
func merge(a, b Chunk) Chunk {
	a.flush()
	b.flush()
	a.N += b.N
	a.Index = append(a.Index, b.Index...)
	a.Members = append(a.Members, b.Members...)
	return a
}

func (fn *chunkFn) ExtractOutput(c Chunk) Chunk {
	c.flush()
	return c
}

func appendIndex(b []byte, id uuid.UUID, origin uint64, n int) []byte {
	b = append(b, id[:]...)
	b = binary.BigEndian.AppendUint64(b, origin)
	return binary.BigEndian.AppendUint32(b, uint32(n))
}

// Origins returns the origin of every impression the chunk holds, copies included.
func (c Chunk) Origins() []uint64 {
	if len(c.Index) != c.N*indexEntry {
		return nil // corrupt: Each says so
	}
	out := make([]uint64, c.N)
	for i := range c.N {
		_, out[i], _ = c.entry(i)
	}
	return out
}

// Digest names the chunk's impressions, whatever their order and copies: 16 hex
// digits of a hash over their sorted unique ids.
func (c Chunk) Digest() string {
	ids := make([]uuid.UUID, 0, c.N)
	for i := range c.N {
		id, _, _ := c.entry(i)
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	return impression.Digest(slices.Compact(ids))
}

func (c *Chunk) entry(i int) (id uuid.UUID, origin uint64, n int) {
	e := c.Index[i*indexEntry : (i+1)*indexEntry]
	copy(id[:], e)
	return id, binary.BigEndian.Uint64(e[16:]), int(binary.BigEndian.Uint32(e[24:]))
}

// flush compresses the pending raw records into a new member.
func (c *Chunk) flush() {
	if len(c.raw) == 0 {
		return
	}
	c.Members = append(c.Members, compress(c.raw))
	c.raw = nil
}

var gzipWriters = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}

// compress returns b as one complete gzip member.
func compress(b []byte) []byte {
	var out bytes.Buffer
	out.Grow(len(b)/4 + 64)
	zw := gzipWriters.Get().(*gzip.Writer)
	zw.Reset(&out)
	zw.Write(b) // writes to a bytes.Buffer cannot fail
	zw.Close()
	gzipWriters.Put(zw)
	return out.Bytes()
}

// Data is a data object ready to store: gzip members to write in order (a valid
// multi-member gzip file) and what it holds.
type Data struct {
	Members    [][]byte
	Records    int // unique impressions in the object
	Duplicates int // copies dropped
	Bytes      int64
}

// Reader returns the object's bytes as one stream.
func (d *Data) Reader() io.Reader {
	rs := make([]io.Reader, len(d.Members))
	for i, m := range d.Members {
		rs[i] = bytes.NewReader(m)
	}
	return io.MultiReader(rs...)
}

// Finish turns a group's chunk into a data object: header first, then each impression
// once. Of several copies of one impression, the first seen (lowest origin) is kept.
// Without duplicates the compressed members are used as they are.
func (c Chunk) Finish(header []byte) (Data, error) {
	c.flush()
	if len(c.Index) != c.N*indexEntry {
		return Data{}, fmt.Errorf("encode: chunk index holds %d bytes for %d records", len(c.Index), c.N)
	}
	keep := c.firstSeen()
	d := Data{Records: c.N, Duplicates: 0}
	if header != nil {
		d.Members = append(d.Members, compress(header))
	}
	if keep == nil {
		d.Members = append(d.Members, c.Members...)
	} else {
		var err error
		if d.Members, err = c.rewrite(d.Members, keep); err != nil {
			return Data{}, err
		}
		for _, k := range keep {
			if !k {
				d.Duplicates++
			}
		}
		d.Records -= d.Duplicates
	}
	for _, m := range d.Members {
		d.Bytes += int64(len(m))
	}
	return d, nil
}

// firstSeen returns nil when every record is a distinct impression, else which
// records to keep.
func (c *Chunk) firstSeen() []bool {
	best := make(map[uuid.UUID]int, c.N) // id -> index of the copy to keep
	var keep []bool
	for i := 0; i < c.N; i++ {
		id, origin, _ := c.entry(i)
		j, dup := best[id]
		if !dup {
			best[id] = i
			continue
		}
		if keep == nil {
			keep = make([]bool, c.N)
			for k := range keep {
				keep[k] = true
			}
		}
		if _, o, _ := c.entry(j); origin < o {
			best[id], keep[j] = i, false
		} else {
			keep[i] = false
		}
	}
	return keep
}

// rewrite appends new members holding only the kept records.
func (c *Chunk) rewrite(out [][]byte, keep []bool) ([][]byte, error) {
	var raw []byte
	err := c.each(keep, func(rec []byte) error {
		raw = append(raw, rec...)
		if len(raw) >= memberSize {
			out, raw = append(out, compress(raw)), raw[:0]
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(raw) > 0 {
		out = append(out, compress(raw))
	}
	return out, nil
}

// Each calls fn with each record of the chunk in order, keeping, of several copies of
// one impression, only the first seen. It returns how many copies it dropped.
func (c Chunk) Each(fn func(rec []byte) error) (duplicates int, err error) {
	c.flush()
	if len(c.Index) != c.N*indexEntry {
		return 0, fmt.Errorf("encode: chunk index holds %d bytes for %d records", len(c.Index), c.N)
	}
	keep := c.firstSeen()
	for _, k := range keep {
		if !k {
			duplicates++
		}
	}
	return duplicates, c.each(keep, fn)
}

// each decompresses the members and calls fn with each record that keep keeps (all
// when keep is nil).
func (c *Chunk) each(keep []bool, fn func(rec []byte) error) error {
	zr, err := gzip.NewReader(c.Reader())
	if err != nil {
		if c.N == 0 {
			return nil
		}
		return fmt.Errorf("encode: read chunk: %w", err)
	}
	var rec []byte
	for i := 0; i < c.N; i++ {
		_, _, n := c.entry(i)
		rec = slices.Grow(rec[:0], n)[:n]
		if _, err := io.ReadFull(zr, rec); err != nil {
			return fmt.Errorf("encode: read chunk record %d: %w", i, err)
		}
		if keep == nil || keep[i] {
			if err := fn(rec); err != nil {
				return err
			}
		}
	}
	return nil
}

// Reader returns the chunk's compressed members as one stream.
func (c *Chunk) Reader() io.Reader {
	d := Data{Members: c.Members}
	return d.Reader()
}

var errCorruptChunk = errors.New("encode: corrupt chunk")

func marshalChunk(c Chunk) ([]byte, error) {
	c.flush()
	size := 2*binary.MaxVarintLen64 + len(c.Index)
	for _, m := range c.Members {
		size += binary.MaxVarintLen64 + len(m)
	}
	b := make([]byte, 0, size)
	b = binary.AppendUvarint(b, uint64(c.N))
	b = append(b, c.Index...)
	b = binary.AppendUvarint(b, uint64(len(c.Members)))
	for _, m := range c.Members {
		b = binary.AppendUvarint(b, uint64(len(m)))
		b = append(b, m...)
	}
	return b, nil
}

func unmarshalChunk(b []byte) (Chunk, error) {
	var c Chunk
	b = bytes.Clone(b) // the chunk keeps slices of b; the caller may reuse its buffer
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k)/indexEntry {
		return c, errCorruptChunk
	}
	c.N, b = int(n), b[k:]
	// Full slice expressions: an append to Index (a merge) must not run over the
	// members that follow it in b.
	end := c.N * indexEntry
	c.Index, b = b[:end:end], b[end:]
	m, k := binary.Uvarint(b)
	if k <= 0 || m > uint64(len(b)) {
		return c, errCorruptChunk
	}
	b = b[k:]
	c.Members = make([][]byte, 0, m)
	for range m {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return c, errCorruptChunk
		}
		c.Members = append(c.Members, b[k:k+int(l):k+int(l)])
		b = b[k+int(l):]
	}
	if len(b) != 0 {
		return c, errCorruptChunk
	}
	return c, nil
}
