// Package ack is a stream's account of its progress, kept by the pipeline itself so
// that it holds wherever the workers run (CONTRACT §3: offsets are committed after
// what was read up to them is delivered or dead-lettered).
//
// Records are named by their origin (impression.Impression.Origin): the source's
// partition in the top 16 bits, the record's offset below. The DoFns that read,
// drop, deliver, store and dead-letter a stream's impressions report what they did
// as marks, gathered per element in a Tally and emitted as KV<partition, marks>
// elements:
//
//   - Start: the partition is read from this offset on (its lister);
//   - Read: the record at this offset was parsed into this many copies to finish,
//     one per integration each valid impression is routed to and one per invalid
//     line; the first offset it accounts for comes with it, since offsets have gaps;
//   - Done: this many copies of the record's impressions are finished.
//
// A committer keyed by partition folds them into a Ledger, in whatever order they
// arrive, and commits its Next offset. The marks are ordinary outputs, so a bundle
// the runner retries reports once, the one time its output is committed.
package ack

import (
	"encoding/binary"
	"errors"
	"slices"
)

const offsetBits = 48

// Origin names record offset of partition.
func Origin(partition int32, offset int64) uint64 {
	return uint64(partition)<<offsetBits | uint64(offset)&(1<<offsetBits-1)
}

// Split is the inverse of Origin.
func Split(origin uint64) (partition int32, offset int64) {
	return int32(origin >> offsetBits), int64(origin & (1<<offsetBits - 1))
}

// The kinds of marks, as encoded.
const (
	markStart byte = iota + 1 // offset
	markRead                  // offset, from, copies
	markDone                  // offset, n
)

// Tally gathers the marks of one element, by partition. The zero value is empty.
type Tally struct {
	parts map[int32][]byte
	done  []uint64 // Done origins not yet encoded
}

func (t *Tally) add(p int32, kind byte, vs ...int64) {
	if t.parts == nil {
		t.parts = map[int32][]byte{}
	}
	b := append(t.parts[p], kind)
	for _, v := range vs {
		b = binary.AppendVarint(b, v)
	}
	t.parts[p] = b
}

// Start marks that partition is read from offset on.
func (t *Tally) Start(partition int32, offset int64) { t.add(partition, markStart, offset) }

// Read marks the record at origin, accounting for offsets from its own on, parsed
// into copies copies to finish.
func (t *Tally) Read(origin uint64, from int64, copies int) {
	p, off := Split(origin)
	t.add(p, markRead, off, from, int64(copies))
}

// Done marks one copy finished for each origin.
func (t *Tally) Done(origins ...uint64) { t.done = append(t.done, origins...) }

// Emit emits the marks gathered, one element per partition, and empties t.
func (t *Tally) Emit(emit func(int32, []byte)) {
	// Copies of one record are mostly finished together: one mark for each record.
	slices.Sort(t.done)
	for i := 0; i < len(t.done); {
		j := i + 1
		for j < len(t.done) && t.done[j] == t.done[i] {
			j++
		}
		p, off := Split(t.done[i])
		t.add(p, markDone, off, int64(j-i))
		i = j
	}
	for p, b := range t.parts {
		emit(p, b)
	}
	t.parts, t.done = nil, t.done[:0]
}

// Empty says whether t holds no marks.
func (t *Tally) Empty() bool { return len(t.parts) == 0 && len(t.done) == 0 }

// record is what a ledger knows of one record.
type record struct {
	read         bool
	from, copies int64 // from the Read mark
	done         int64
}

func (r *record) finished() bool { return r.read && r.done >= r.copies }

// Ledger is the account of one partition.
type Ledger struct {
	// Next is the offset to commit: every record before it is finished. -1 until the
	// Start mark is in.
	Next    int64
	records map[int64]*record
	byFrom  map[int64]int64 // the offsets of Read records by the first offset they account for
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{Next: -1, records: map[int64]*record{}, byFrom: map[int64]int64{}}
}

var errCorrupt = errors.New("ack: corrupt marks")

// Mark is one mark, decoded: for messages and tests.
type Mark struct {
	Kind   string // "start", "read" or "done"
	Offset int64
	From   int64 // read
	N      int64 // read: copies to finish; done: copies finished
}

// Decode returns the marks a Tally emitted.
func Decode(marks []byte) ([]Mark, error) {
	var out []Mark
	err := each(marks, func(kind byte, v [3]int64) {
		m := Mark{Offset: v[0]}
		switch kind {
		case markStart:
			m.Kind = "start"
		case markRead:
			m.Kind, m.From, m.N = "read", v[1], v[2]
		case markDone:
			m.Kind, m.N = "done", v[1]
		}
		out = append(out, m)
	})
	return out, err
}

// each calls f with every mark of marks.
func each(marks []byte, f func(kind byte, v [3]int64)) error {
	for len(marks) > 0 {
		kind := marks[0]
		marks = marks[1:]
		n := map[byte]int{markStart: 1, markRead: 3, markDone: 2}[kind]
		if n == 0 {
			return errCorrupt
		}
		var v [3]int64
		for i := range n {
			x, k := binary.Varint(marks)
			if k <= 0 {
				return errCorrupt
			}
			v[i], marks = x, marks[k:]
		}
		f(kind, v)
	}
	return nil
}

// Add folds in marks, as a Tally emitted them, and reports whether Next moved.
func (l *Ledger) Add(marks []byte) (moved bool, err error) {
	start := l.Next
	err = each(marks, l.add)
	l.advance()
	return l.Next != start, err
}

func (l *Ledger) add(kind byte, v [3]int64) {
	if kind == markStart {
		if l.Next < 0 { // a lister started again later: the first start stands
			l.Next = v[0]
		}
		return
	}
	off := v[0]
	if l.Next >= 0 && off < l.Next {
		return // finished and committed already
	}
	r := l.records[off]
	if r == nil {
		r = &record{}
		l.records[off] = r
	}
	switch kind {
	case markRead:
		r.read, r.from, r.copies = true, v[1], v[2]
		l.byFrom[r.from] = off
	case markDone:
		r.done += v[1]
	}
}

// advance moves Next over the finished records that follow it without a gap.
func (l *Ledger) advance() {
	for l.Next >= 0 {
		off, ok := l.byFrom[l.Next]
		if !ok {
			return
		}
		if r := l.records[off]; !r.finished() {
			return
		}
		delete(l.byFrom, l.Next)
		delete(l.records, off)
		l.Next = off + 1
	}
}

// Pending is how many records the ledger holds: read or reported, not yet passed.
func (l *Ledger) Pending() int { return len(l.records) }

// MarshalBinary encodes the ledger, for a committer's state.
func (l *Ledger) MarshalBinary() ([]byte, error) {
	b := binary.AppendVarint(nil, l.Next)
	offs := make([]int64, 0, len(l.records))
	for off := range l.records {
		offs = append(offs, off)
	}
	slices.Sort(offs)
	for _, off := range offs {
		r := l.records[off]
		read := int64(0)
		if r.read {
			read = 1
		}
		for _, v := range [...]int64{off, read, r.from, r.copies, r.done} {
			b = binary.AppendVarint(b, v)
		}
	}
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary wrote.
func (l *Ledger) UnmarshalBinary(b []byte) error {
	*l = *NewLedger()
	var vs []int64
	for len(b) > 0 {
		x, k := binary.Varint(b)
		if k <= 0 {
			return errCorrupt
		}
		vs, b = append(vs, x), b[k:]
	}
	if len(vs) == 0 || (len(vs)-1)%5 != 0 {
		return errCorrupt
	}
	l.Next = vs[0]
	for v := vs[1:]; len(v) > 0; v = v[5:] {
		r := &record{read: v[1] == 1, from: v[2], copies: v[3], done: v[4]}
		l.records[v[0]] = r
		if r.read {
			l.byFrom[r.from] = v[0]
		}
	}
	return nil
}
