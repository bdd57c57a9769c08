package delivery

import (
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/google/uuid"

	"github.com/outflow/outflow/internal/impression"
)

// Batches wait in Beam state while they are retried, so their coding is compact.
func init() {
	beam.RegisterCoder(reflect.TypeOf(Batch{}), marshalBatch, unmarshalBatch)
}

// Batch is the impressions of one request to one integration, and its delivery
// history.
type Batch struct {
	// ID names the batch by its content: its integration and a digest of its
	// impressions' ids (batchID). It is the same on every retry and every rerun of the
	// batch, so it makes webhook-id; a split's halves and a partial answer's parts are
	// batches of their own.
	ID          string
	Integration string
	Imps        []impression.Impression

	Attempts  int    // requests sent so far
	FirstTry  int64  // Unix ms of the first attempt, 0 before it
	NotBefore int64  // Unix ms before which it must not be sent, 0 = now
	Status    int    // status of the last answer
	Reason    string // why the last attempt failed
}

// part returns a batch holding the impressions at idx of b, with b's history.
func (b *Batch) part(idx []int) Batch {
	p := *b
	p.Imps = make([]impression.Impression, len(idx))
	for i, j := range idx {
		p.Imps[i] = b.Imps[j]
	}
	p.ID = batchID(b.Integration, p.Imps)
	return p
}

// pieces splits b, for a 413, into parts of at most size events (and at most half of
// b's).
func (b *Batch) pieces(size int) []Batch {
	size = max(1, min(size, len(b.Imps)/2))
	var out []Batch
	for from := 0; from < len(b.Imps); from += size {
		idx := make([]int, 0, size)
		for i := from; i < min(from+size, len(b.Imps)); i++ {
			idx = append(idx, i)
		}
		out = append(out, b.part(idx))
	}
	return out
}

func marshalBatch(b Batch) ([]byte, error) {
	out := make([]byte, 0, 64+len(b.Imps)*256)
	for _, s := range []string{b.ID, b.Integration, b.Reason} {
		out = binary.AppendUvarint(out, uint64(len(s)))
		out = append(out, s...)
	}
	for _, v := range []int64{int64(b.Attempts), b.FirstTry, b.NotBefore, int64(b.Status), int64(len(b.Imps))} {
		out = binary.AppendVarint(out, v)
	}
	for _, imp := range b.Imps {
		out = impression.AppendBinary(out, imp)
	}
	return out, nil
}

var errCorruptBatch = errors.New("delivery: corrupt batch")

func unmarshalBatch(data []byte) (Batch, error) {
	var b Batch
	for _, s := range []*string{&b.ID, &b.Integration, &b.Reason} {
		n, k := binary.Uvarint(data)
		if k <= 0 || n > uint64(len(data)-k) {
			return b, errCorruptBatch
		}
		*s = string(data[k : k+int(n)])
		data = data[k+int(n):]
	}
	var attempts, status, count int64
	for _, v := range []*int64{&attempts, &b.FirstTry, &b.NotBefore, &status, &count} {
		x, k := binary.Varint(data)
		if k <= 0 {
			return b, errCorruptBatch
		}
		*v, data = x, data[k:]
	}
	b.Attempts, b.Status = int(attempts), int(status)
	if count < 0 || count > int64(len(data)) {
		return b, errCorruptBatch
	}
	b.Imps = make([]impression.Impression, 0, count)
	for range count {
		imp, rest, err := impression.Next(data)
		if err != nil {
			return b, fmt.Errorf("%w: %v", errCorruptBatch, err)
		}
		b.Imps, data = append(b.Imps, imp), rest
	}
	if len(data) != 0 {
		return b, errCorruptBatch
	}
	return b, nil
}

// pack splits impressions into batches within the destination's limits, in order.
// Items too large for any request come back in tooBig with the reason.
func pack(dest Destination, id string, imps []impression.Impression) (batches []Batch, tooBig []impression.Impression, reason string, err error) {
	lim := dest.Limits()
	var cur []impression.Impression
	size := lim.Envelope
	flush := func() {
		if len(cur) > 0 {
			batches = append(batches, Batch{ID: batchID(id, cur), Integration: id, Imps: cur})
			cur, size = nil, lim.Envelope
		}
	}
	for i := range imps {
		item, err := dest.Item(&imps[i])
		if err != nil {
			return nil, nil, "", fmt.Errorf("delivery: encode an impression for %s: %w", id, err)
		}
		n := len(item) + 1 // and a comma
		if (lim.MaxItem > 0 && len(item) > lim.MaxItem) || (lim.MaxBytes > 0 && lim.Envelope+len(item) > lim.MaxBytes) {
			tooBig = append(tooBig, imps[i])
			reason = fmt.Sprintf("the event is %d bytes; the destination accepts at most %d per event and %d per request", len(item), lim.MaxItem, lim.MaxBytes)
			continue
		}
		if len(cur) > 0 && ((lim.MaxEvents > 0 && len(cur) >= lim.MaxEvents) || (lim.MaxBytes > 0 && size+n > lim.MaxBytes)) {
			flush()
		}
		cur = append(cur, imps[i])
		size += n
	}
	flush()
	return batches, tooBig, reason, nil
}

// batchID names a batch by its content: its integration and a digest of its
// impressions' ids, in order (CONTRACT §4: webhook-id derives from it).
func batchID(id string, imps []impression.Impression) string {
	ids := make([]uuid.UUID, len(imps))
	for i := range imps {
		ids[i] = imps[i].ID
	}
	return id + "_" + impression.Digest(ids)
}
