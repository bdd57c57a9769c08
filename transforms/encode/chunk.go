package encode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
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
	Index   []byte   // N entries: see appendEntry
	Members [][]byte // gzip members holding the records, in order
	raw     []byte   // records not yet compressed

	last     uint64 // the origin of Index's last entry, when anchored
	anchored bool   // Index was built here, so an entry may say its origin by difference
}

// memberSize is how much raw data goes in one gzip member: past gzip's 32 KiB
// window, larger members barely compress better.
const memberSize = 64 << 10

// appendEntry adds a record to the index: its impression id (16 bytes), a uvarint of
// its encoded length shifted left by one, the low bit set when the origin that
// follows is absolute (a uvarint) rather than its difference from the entry before
// (a varint). The first entry of an index is absolute, so indexes concatenate as
// they are (merge). A reader's records come in file order, so an entry takes about
// 19 bytes rather than 28 at fixed widths: the index is half of what a backfill
// shuffles, and the shuffle holds several copies of it at once.
func (c *Chunk) appendEntry(id uuid.UUID, origin uint64, n int) {
	c.Index = append(c.Index, id[:]...)
	if c.anchored {
		c.Index = binary.AppendUvarint(c.Index, uint64(n)<<1)
		c.Index = binary.AppendVarint(c.Index, int64(origin-c.last)) // wraps back in entries
	} else {
		c.Index = binary.AppendUvarint(c.Index, uint64(n)<<1|1)
		c.Index = binary.AppendUvarint(c.Index, origin)
	}
	c.last, c.anchored = origin, true
	c.N++
}

// entry is a record's index entry, decoded.
type entry struct {
	id     uuid.UUID
	origin uint64
	n      int // encoded length
}

// entries decodes the index.
func (c *Chunk) entries() ([]entry, error) {
	out := make([]entry, 0, c.N)
	var prev uint64
	for b := c.Index; len(b) > 0; {
		var e entry
		if len(b) < len(e.id) {
			return nil, errCorruptIndex
		}
		b = b[copy(e.id[:], b):]
		n, k := binary.Uvarint(b)
		if k <= 0 || n>>1 > math.MaxInt32 {
			return nil, errCorruptIndex
		}
		b, e.n = b[k:], int(n>>1)
		if n&1 == 1 {
			e.origin, k = binary.Uvarint(b)
		} else {
			var d int64
			d, k = binary.Varint(b)
			e.origin = prev + uint64(d)
			if len(out) == 0 {
				k = 0 // the first must be absolute
			}
		}
		if k <= 0 {
			return nil, errCorruptIndex
		}
		b, prev = b[k:], e.origin
		out = append(out, e)
	}
	if len(out) != c.N {
		return nil, fmt.Errorf("encode: chunk index holds %d entries for %d records", len(out), c.N)
	}
	return out, nil
}

var errCorruptIndex = errors.New("encode: corrupt chunk index")

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
	c.appendEntry(imp.ID, imp.Origin, len(c.raw)-before)
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
	if b.N == 0 {
		return a
	}
	a.N += b.N
	a.Index = append(a.Index, b.Index...)
	a.Members = append(a.Members, b.Members...)
	a.last, a.anchored = b.last, b.anchored
	return a
}

func (fn *chunkFn) ExtractOutput(c Chunk) Chunk {
	c.flush()
	return c
}

// Origins returns the origin of every impression the chunk holds, copies included.
func (c Chunk) Origins() []uint64 {
	es, err := c.entries()
	if err != nil {
		return nil // corrupt: Each says so
	}
	out := make([]uint64, len(es))
	for i := range es {
		out[i] = es[i].origin
	}
	return out
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
	// IDs are the object's impressions' ids, each once, in no order; Digest names
	// them (SetDigest).
	IDs    []uuid.UUID
	Digest string
}

// Reader returns the object's bytes as one stream.
func (d *Data) Reader() io.Reader {
	rs := make([]io.Reader, len(d.Members))
	for i, m := range d.Members {
		rs[i] = bytes.NewReader(m)
	}
	return io.MultiReader(rs...)
}

// ReadSeeker returns the object's bytes as one stream that can seek, without
// joining them (a store sending it in one request reads it twice: to sign, to send).
func (d *Data) ReadSeeker() io.ReadSeeker {
	r := &membersReader{members: d.Members}
	for _, m := range d.Members {
		r.size += int64(len(m))
	}
	return r
}

// membersReader reads and seeks through byte slices as if they were one.
type membersReader struct {
	members   [][]byte
	size, off int64
}

func (r *membersReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	n, start := 0, int64(0)
	for _, m := range r.members {
		end := start + int64(len(m))
		if r.off < end && n < len(p) {
			k := copy(p[n:], m[r.off-start:])
			n, r.off = n+k, r.off+int64(k)
		}
		start = end
	}
	return n, nil
}

func (r *membersReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.size
	}
	if offset < 0 {
		return r.off, errors.New("encode: seek before the start")
	}
	r.off = offset
	return offset, nil
}

// Finish turns a group's chunk into a data object: header first, then each impression
// once. Of several copies of one impression, the first seen (lowest origin) is kept.
// Without duplicates the compressed members are used as they are.
func (c Chunk) Finish(header []byte) (Data, error) {
	c.flush()
	es, err := c.entries()
	if err != nil {
		return Data{}, err
	}
	seen := firstSeen(es)
	keep := seen.keep
	d := Data{Records: c.N, Duplicates: 0, IDs: seen.ids, Digest: seen.digest()}
	if header != nil {
		d.Members = append(d.Members, compress(header))
	}
	if keep == nil {
		d.Members = append(d.Members, c.Members...)
	} else {
		if d.Members, err = c.rewrite(d.Members, es, keep); err != nil {
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

// copies says, of a chunk's records, which to keep: of several copies of one
// impression, the first seen (lowest origin).
type copies struct {
	keep []bool      // nil when every record is a distinct impression
	ids  []uuid.UUID // the distinct impressions' ids, in the order first met
	sum  uint64      // SetDigest's sum over ids
}

// firstSeen finds the chunk's copies of impressions.
func firstSeen(es []entry) copies {
	best := make(map[uuid.UUID]int, len(es)) // id -> index of the copy to keep
	c := copies{ids: make([]uuid.UUID, 0, len(es))}
	for i := range es {
		id, origin := es[i].id, es[i].origin
		j, dup := best[id]
		if !dup {
			best[id] = i
			c.ids = append(c.ids, id)
			c.sum += binary.BigEndian.Uint64(id[:8])
			continue
		}
		if c.keep == nil {
			c.keep = make([]bool, len(es))
			for k := range c.keep {
				c.keep[k] = true
			}
		}
		if origin < es[j].origin {
			best[id], c.keep[j] = i, false
		} else {
			c.keep[i] = false
		}
	}
	return c
}

func (c copies) digest() string { return fmt.Sprintf("%016x", c.sum) }

// SetDigest names a set of distinct impressions by their ids, whatever their order:
// 16 hex digits of the sum of each id's first 8 bytes, modulo 2^64. The ids are
// SHA-1 digests (UUIDv5), evenly spread, so the sum tells sets apart as well as a
// hash of them would, and needs no sort. Object and pane names carry it.
func SetDigest(ids []uuid.UUID) string {
	var sum uint64
	for i := range ids {
		sum += binary.BigEndian.Uint64(ids[i][:8])
	}
	return fmt.Sprintf("%016x", sum)
}

// rewrite appends new members holding only the kept records.
func (c *Chunk) rewrite(out [][]byte, es []entry, keep []bool) ([][]byte, error) {
	var raw []byte
	err := c.each(es, keep, func(rec []byte) error {
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
	es, err := c.entries()
	if err != nil {
		return 0, err
	}
	keep := firstSeen(es).keep
	for _, k := range keep {
		if !k {
			duplicates++
		}
	}
	return duplicates, c.each(es, keep, fn)
}

// each decompresses the members and calls fn with each record, as es (c's entries)
// delimits them, that keep keeps (all when keep is nil).
func (c *Chunk) each(es []entry, keep []bool, fn func(rec []byte) error) error {
	zr, err := gzip.NewReader(c.Reader())
	if err != nil {
		if c.N == 0 {
			return nil
		}
		return fmt.Errorf("encode: read chunk: %w", err)
	}
	var rec []byte
	for i := range es {
		n := es[i].n
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
	size := 3*binary.MaxVarintLen64 + len(c.Index)
	for _, m := range c.Members {
		size += binary.MaxVarintLen64 + len(m)
	}
	b := make([]byte, 0, size)
	b = binary.AppendUvarint(b, uint64(c.N))
	b = binary.AppendUvarint(b, uint64(len(c.Index)))
	b = append(b, c.Index...)
	b = binary.AppendUvarint(b, uint64(len(c.Members)))
	for _, m := range c.Members {
		b = binary.AppendUvarint(b, uint64(len(m)))
		b = append(b, m...)
	}
	return b, nil
}

func unmarshalChunk(b []byte) (Chunk, error) {
	// The chunk keeps slices of b: the SDK decodes each element into a buffer of its
	// own (TestDecodedChunksOwnTheirBytes), and a copy would allocate every byte a
	// backfill shuffles once more.
	var c Chunk
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return c, errCorruptChunk
	}
	c.N, b = int(n), b[k:]
	l, k := binary.Uvarint(b)
	if k <= 0 || l > uint64(len(b)-k) || l < 18*n { // 18: the smallest entry
		return c, errCorruptChunk
	}
	b = b[k:]
	// Full slice expressions: an append to Index (a merge) must not run over the
	// members that follow it in b.
	end := int(l)
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
