package delivery

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/outflow/outflow/internal/impression"
)

// What one key (an integration) holds while it delivers, in the state every runner
// serves (Value and Bag):
//
//   - fresh: impressions not yet in a batch, appended as they arrive (Bag). They are
//     packed into full requests only when the destination can take one, so a backlog
//     that builds up while it is paused or slow leaves as full requests, across
//     event-time windows.
//   - queue: packed batches never sent, in order (Bag, append-only); the schedule's
//     cursor says which are still to go.
//   - parts: batches formed from an answer (a split's halves, a partial answer's
//     parts), each with history (Bag, append-only).
//   - schedule: the small part every wake reads (Value): the cursor, the counts, and
//     one entry per batch sent at least once (in flight or to be sent again). Its size
//     does not grow with the backlog of batches never sent, and deciding what to do
//     never decodes a batch.
//
// Bag elements no longer needed stay until enough pile up to rewrite the Bag
// (amortised O(1) a batch). A worker keeps the decoded Bags in memory (contents),
// valid only for the schedule generation they were read or written under:
// correctness rests on state alone; the memory spares reading the whole backlog to
// send one batch.

func init() {
	beam.RegisterCoder(reflect.TypeOf(schedule{}), marshalSchedule, unmarshalSchedule)
}

// schedule is a key's Value state.
type schedule struct {
	Gen        uint64 // changes whenever a Bag does; names the cached contents
	Seq        uint64 // entries made so far: each one's tag
	Next       int    // queue positions [Next, QueueLen) are batches never sent
	QueueLen   int    // elements in the queue Bag
	QueuedN    int    // impressions in the batches never sent
	PartsLen   int    // elements in the parts Bag
	FreshN     int    // impressions in fresh
	FreshBytes int    // their size in the binary coding (a lower bound of their JSON)
	FreshSince int64  // Unix ms when the oldest of them arrived
	FreshLast  int64  // Unix ms when the newest of them arrived
	// FreshOldest and QueueOldest (one per batch never sent, in queue order) are the
	// impression times of the oldest impressions held, for the delay operators watch.
	FreshOldest int64
	QueueOldest []int64
	Entries     []entry
	// Recovered is the end of the destination's last outage (Unix ms) this key saw:
	// its failed batches were made due then (drainRun.afterRecovery).
	Recovered int64
}

// oldest is the impression time (Unix ms) of the oldest impression the key holds, 0
// when it holds none.
func (sc *schedule) oldest() int64 {
	var o int64
	older := func(t int64) {
		if t > 0 && (o == 0 || t < o) {
			o = t
		}
	}
	if sc.FreshN > 0 {
		older(sc.FreshOldest)
	}
	for _, t := range sc.QueueOldest {
		older(t)
	}
	for _, e := range sc.Entries {
		older(e.Oldest)
	}
	return o
}

// oldestOf is the impression time of the oldest of imps, 0 for none.
func oldestOf(imps []impression.Impression) int64 {
	var o int64
	for i := range imps {
		if i == 0 || imps[i].Time < o {
			o = imps[i].Time
		}
	}
	return o
}

// pending is how many impressions the key holds.
func (sc *schedule) pending() int {
	n := sc.FreshN + sc.QueuedN
	for _, e := range sc.Entries {
		n += e.N
	}
	return n
}

func (sc *schedule) empty() bool {
	return len(sc.Entries) == 0 && sc.FreshN == 0 && sc.QueueLen == 0 && sc.PartsLen == 0
}

// where is a batch's place: a position in the queue or in the parts Bag.
type where struct {
	Part bool
	Pos  int
}

// entry is a batch sent at least once: where it is, and its delivery history.
type entry struct {
	ID  string
	Tag uint64 // names its requests, wherever compaction moves its contents
	where
	N         int   // impressions
	Oldest    int64 // impression time of the oldest of them
	NotBefore int64 // Unix ms before which it must not be sent, 0 = now
	FirstTry  int64 // Unix ms of the first attempt, 0 before it
	Attempts  int
	Status    int
	Reason    string
}

// history copies e's delivery history into b.
func (e *entry) history(b *Batch) {
	b.Attempts, b.FirstTry, b.NotBefore, b.Status, b.Reason = e.Attempts, e.FirstTry, e.NotBefore, e.Status, e.Reason
}

// key names e's request in the worker's registry of calls: by tag too, since the same
// impressions may be in two batches of one key (a stream that read them twice).
func (e *entry) key() string { return fmt.Sprintf("%s@%d", e.ID, e.Tag) }

// store is a key's state. The Beam adapter is beamStore; tests count its reads.
type store interface {
	schedule() (schedule, error)
	setSchedule(schedule) error
	fresh() ([]Batch, error)
	addFresh(Batch) error
	clearFresh() error
	bag(part bool) ([]Batch, error) // the queue or the parts
	add(part bool, b Batch) error
	clear(part bool) error
}

// contents is the decoded queue and parts Bags of one key, by position; nil where
// this worker has not read them.
type contents struct {
	queue, parts []*Batch
}

// bagIndex numbers the queue 0 and the parts Bag 1.
func bagIndex(part bool) int {
	if part {
		return 1
	}
	return 0
}

func (c *contents) slot(part bool) *[]*Batch {
	if part {
		return &c.parts
	}
	return &c.queue
}

func (c *contents) get(w where) *Batch {
	if s := *c.slot(w.Part); w.Pos < len(s) {
		return s[w.Pos]
	}
	return nil
}

func (c *contents) set(w where, b *Batch) {
	s := c.slot(w.Part)
	for len(*s) <= w.Pos {
		*s = append(*s, nil)
	}
	(*s)[w.Pos] = b
}

// contentCache holds, per worker process, the decoded Bags of the keys it serves, by
// schedule generation (random, so two pipelines in one process never meet).
var contentCache = struct {
	sync.Mutex
	m map[uint64]*contents
}{m: map[uint64]*contents{}}

// cachedContents takes the contents of generation gen out of the cache (the caller
// owns them until it stores them back), or returns empty ones.
func cachedContents(gen uint64) *contents {
	contentCache.Lock()
	defer contentCache.Unlock()
	c := contentCache.m[gen]
	delete(contentCache.m, gen)
	if c == nil {
		c = &contents{}
	}
	return c
}

func storeContents(gen uint64, c *contents) {
	contentCache.Lock()
	contentCache.m[gen] = c
	contentCache.Unlock()
}

func marshalSchedule(sc schedule) ([]byte, error) {
	b := make([]byte, 0, 48+len(sc.Entries)*64)
	b = binary.AppendUvarint(b, sc.Gen)
	b = binary.AppendUvarint(b, sc.Seq)
	for _, v := range []int64{int64(sc.Next), int64(sc.QueueLen), int64(sc.QueuedN), int64(sc.PartsLen), int64(sc.FreshN), int64(sc.FreshBytes),
		sc.FreshSince, sc.FreshLast, sc.FreshOldest, sc.Recovered, int64(len(sc.QueueOldest))} {
		b = binary.AppendVarint(b, v)
	}
	for _, t := range sc.QueueOldest {
		b = binary.AppendVarint(b, t)
	}
	b = binary.AppendVarint(b, int64(len(sc.Entries)))
	for _, e := range sc.Entries {
		b = appendString(b, e.ID)
		b = binary.AppendUvarint(b, e.Tag)
		part := int64(0)
		if e.Part {
			part = 1
		}
		for _, v := range []int64{part, int64(e.Pos), int64(e.N), e.Oldest, e.NotBefore, e.FirstTry, int64(e.Attempts), int64(e.Status)} {
			b = binary.AppendVarint(b, v)
		}
		b = appendString(b, e.Reason)
	}
	return b, nil
}

func unmarshalSchedule(data []byte) (schedule, error) {
	s := &scanner{b: data}
	sc := schedule{Gen: s.uvarint(), Seq: s.uvarint()}
	sc.Next, sc.QueueLen, sc.QueuedN, sc.PartsLen = int(s.varint()), int(s.varint()), int(s.varint()), int(s.varint())
	sc.FreshN, sc.FreshBytes = int(s.varint()), int(s.varint())
	sc.FreshSince, sc.FreshLast, sc.FreshOldest, sc.Recovered = s.varint(), s.varint(), s.varint(), s.varint()
	q := s.varint()
	if s.err != nil || q < 0 || q > int64(len(s.b)) {
		return schedule{}, errCorruptSchedule
	}
	for range q {
		sc.QueueOldest = append(sc.QueueOldest, s.varint())
	}
	n := s.varint()
	if s.err != nil || n < 0 || n > int64(len(s.b)) {
		return schedule{}, errCorruptSchedule
	}
	sc.Entries = make([]entry, 0, n)
	for range n {
		e := entry{ID: s.string(), Tag: s.uvarint()}
		e.Part, e.Pos, e.N, e.Oldest = s.varint() == 1, int(s.varint()), int(s.varint()), s.varint()
		e.NotBefore, e.FirstTry = s.varint(), s.varint()
		e.Attempts, e.Status = int(s.varint()), int(s.varint())
		e.Reason = s.string()
		sc.Entries = append(sc.Entries, e)
	}
	if s.err != nil || len(s.b) != 0 {
		return schedule{}, errCorruptSchedule
	}
	return sc, nil
}

var errCorruptSchedule = errors.New("delivery: corrupt schedule")

// scanner reads what marshalSchedule wrote, remembering the first error.
type scanner struct {
	b   []byte
	err error
}

func (s *scanner) uvarint() uint64 {
	v, k := binary.Uvarint(s.b)
	if k <= 0 {
		s.err, s.b = errCorruptSchedule, nil
		return 0
	}
	s.b = s.b[k:]
	return v
}

func (s *scanner) varint() int64 {
	v, k := binary.Varint(s.b)
	if k <= 0 {
		s.err, s.b = errCorruptSchedule, nil
		return 0
	}
	s.b = s.b[k:]
	return v
}

func (s *scanner) string() string {
	n := s.uvarint()
	if n > uint64(len(s.b)) {
		s.err, s.b = errCorruptSchedule, nil
		return ""
	}
	v := string(s.b[:n])
	s.b = s.b[n:]
	return v
}

func newGen() uint64 {
	for {
		if g := rand.Uint64(); g != 0 {
			return g
		}
	}
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}
