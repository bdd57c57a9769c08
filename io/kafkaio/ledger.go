package kafkaio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/state"

	"github.com/outflow/outflow/internal/ack"
)

// ledgerLog keeps a partition's ledger (package ack) in state that every runner
// serves: a Bag of entries, a snapshot of the ledger and the marks folded in after it,
// and a Value beside it (logMeta).
//
// The ledger holds every record not yet finished: with a destination down, every
// record it holds back, up to its max_pending_impressions. A firing appends its new
// marks; once the marks appended since the snapshot outweigh it, the log is replaced
// by a new snapshot, whose cost is then spread over those marks. So a firing writes
// O(its new marks), amortized, whatever the ledger holds, and the log stays under
// twice the snapshot's size.
type ledgerLog struct {
	Log  state.Bag[[]byte]
	Meta state.Value[[]byte]
}

func newLedgerLog() ledgerLog {
	return ledgerLog{Log: state.MakeBagState[[]byte]("log"), Meta: state.MakeValueState[[]byte]("meta")}
}

// Entries of the log: a tag, then an encoded ack.Ledger or marks.
const (
	logSnapshot byte = 's'
	logMarks    byte = 'm'
)

// logMeta is what the log needs beside it: gen names the ledger's version, for the
// worker's decoded copy; snapshot and marks are the bytes of each in the log.
type logMeta struct {
	gen             uint64
	snapshot, marks int64
}

func (m logMeta) encode() []byte {
	return binary.AppendVarint(binary.AppendVarint(binary.AppendUvarint(nil, m.gen), m.snapshot), m.marks)
}

func decodeMeta(b []byte) (logMeta, error) {
	var m logMeta
	gen, k := binary.Uvarint(b)
	if k > 0 {
		m.gen, b = gen, b[k:]
		m.snapshot, k = binary.Varint(b)
	}
	if k > 0 {
		m.marks, k = binary.Varint(b[k:])
	}
	if k <= 0 {
		return m, errors.New("corrupt log metadata")
	}
	return m, nil
}

// ledgers holds, per worker process, the decoded ledgers of the partitions it served
// last, by generation: while a destination holds records back, a partition's ledger
// holds every one of them, and rebuilding it from the log at each firing would cost
// more than the rest of the commit. Only a ledger of the generation the state names
// is used.
var ledgers = struct {
	sync.Mutex
	m map[uint64]*ack.Ledger
}{m: map[uint64]*ack.Ledger{}}

// load returns the partition's ledger and the log's metadata: this worker's decoded
// copy when it holds the generation the state names, else the log's snapshot with the
// marks after it folded in (a ledger takes marks in any order, as a bag keeps them).
func (g ledgerLog) load(sp state.Provider) (*ack.Ledger, logMeta, error) {
	var meta logMeta
	b, ok, err := g.Meta.Read(sp)
	if err != nil {
		return nil, meta, fmt.Errorf("read the ledger's metadata: %w", err)
	}
	if !ok {
		return ack.NewLedger(), meta, nil
	}
	if meta, err = decodeMeta(b); err != nil {
		return nil, meta, fmt.Errorf("the ledger: %w", err)
	}
	ledgers.Lock()
	l := ledgers.m[meta.gen]
	delete(ledgers.m, meta.gen)
	ledgers.Unlock()
	if l != nil {
		return l, meta, nil
	}
	entries, _, err := g.Log.Read(sp)
	if err != nil {
		return nil, meta, fmt.Errorf("read the ledger: %w", err)
	}
	l = ack.NewLedger()
	for _, e := range entries { // the snapshot first, wherever the bag has it
		if len(e) > 0 && e[0] == logSnapshot {
			if err := l.UnmarshalBinary(e[1:]); err != nil {
				return nil, meta, fmt.Errorf("the ledger: %w", err)
			}
		}
	}
	for _, e := range entries {
		if len(e) > 0 && e[0] == logMarks {
			if _, err := l.Add(e[1:]); err != nil {
				return nil, meta, fmt.Errorf("the ledger: %w", err)
			}
		}
	}
	return l, meta, nil
}

// save writes what changed since load: added (logMarks, then the firing's marks),
// already folded into l, or a new snapshot of l; and keeps l decoded for the next
// firing on this worker. It returns the bytes of log written.
func (g ledgerLog) save(sp state.Provider, l *ack.Ledger, meta logMeta, added []byte) (int, error) {
	entry := added
	var err error
	if meta.marks+int64(len(added)) < meta.snapshot {
		err = g.Log.Add(sp, added)
		meta.marks += int64(len(added))
	} else {
		b, _ := l.MarshalBinary()
		entry = append([]byte{logSnapshot}, b...)
		err = errors.Join(g.Log.Clear(sp), g.Log.Add(sp, entry))
		meta.snapshot, meta.marks = int64(len(entry)), 0
	}
	meta.gen = rand.Uint64() | 1 // never 0, which is "none"
	if err := errors.Join(err, g.Meta.Write(sp, meta.encode())); err != nil {
		return 0, err
	}
	ledgers.Lock()
	ledgers.m[meta.gen] = l
	ledgers.Unlock()
	return len(entry), nil
}
