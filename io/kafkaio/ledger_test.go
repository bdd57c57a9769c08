package kafkaio

import (
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/state"

	"github.com/outflow/outflow/internal/ack"
)

// memState is a state.Provider of value and bag state in memory, as a runner keeps
// them for one key; it counts the bytes written.
type memState struct {
	state.Provider // the other kinds: unused
	values         map[string]any
	bags           map[string][]any
}

func newMemState() *memState { return &memState{values: map[string]any{}, bags: map[string][]any{}} }

func (m *memState) ReadValueState(id string) (any, []state.Transaction, error) {
	return m.values[id], nil, nil
}
func (m *memState) WriteValueState(t state.Transaction) error { m.values[t.Key] = t.Val; return nil }
func (m *memState) ClearValueState(t state.Transaction) error { delete(m.values, t.Key); return nil }
func (m *memState) ReadBagState(id string) ([]any, []state.Transaction, error) {
	// Reversed: a bag keeps no order.
	out := make([]any, 0, len(m.bags[id]))
	for i := len(m.bags[id]) - 1; i >= 0; i-- {
		out = append(out, m.bags[id][i])
	}
	return out, nil, nil
}
func (m *memState) WriteBagState(t state.Transaction) error {
	m.bags[t.Key] = append(m.bags[t.Key], t.Val)
	return nil
}
func (m *memState) ClearBagState(t state.Transaction) error { delete(m.bags, t.Key); return nil }

// A partition at 2,000 records a firing (2,000 impressions/s for 5 s would be 10,000)
// while one of its two destinations is down: that copy of every record stays
// pending, up to a bound (max_pending_impressions), past which the oldest are
// dead-lettered and finished. Each firing writes about its new marks, not the
// ledger it holds; the log stays under three times the ledger's snapshot; and a worker
// that lost its decoded copy rebuilds the same ledger from the log.
func TestLedgerLogWritesNewMarks(t *testing.T) {
	const (
		perFiring = 2000
		pending   = 30000 // records held back, at most
		firings   = 60
	)
	st := newMemState()
	g := newLedgerLog()
	var offset, oldest int64
	var written, marksBytes, snapshotsWritten int
	var fullSnapshots int // what writing the whole ledger each firing would have cost
	for f := range firings {
		var t0 ack.Tally
		if f == 0 {
			t0.Start(0, 0)
		}
		for range perFiring {
			origin := ack.Origin(0, offset)
			t0.Read(origin, offset, 2)
			t0.Done(origin) // the healthy destination's copy
			offset++
		}
		for offset-oldest > pending { // overflow: dead-lettered, finished
			t0.Done(ack.Origin(0, oldest))
			oldest++
		}
		added := []byte{logMarks}
		t0.Emit(func(_ int32, b []byte) { added = append(added, b...) })

		l, meta, err := g.load(st)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Add(added[1:]); err != nil {
			t.Fatal(err)
		}
		n, err := g.save(st, l, meta, added)
		if err != nil {
			t.Fatal(err)
		}
		written += n
		marksBytes += len(added)
		full, _ := l.MarshalBinary()
		fullSnapshots += len(full) + 1
		if n > len(added) {
			snapshotsWritten++
		}
		if l.Next != oldest || int64(l.Pending()) != offset-oldest {
			t.Fatalf("firing %d: next %d, pending %d; want %d, %d", f, l.Next, l.Pending(), oldest, offset-oldest)
		}

		var logBytes int
		for _, e := range st.bags["log"] {
			logBytes += len(e.([]byte))
		}
		if logBytes > 3*(len(full)+1) {
			t.Errorf("firing %d: the log holds %d bytes, over three times the ledger's %d", f, logBytes, len(full)+1)
		}
		if f%7 == 3 { // a worker without the decoded copy
			ledgers.Lock()
			clear(ledgers.m)
			ledgers.Unlock()
			again, _, err := g.load(st)
			if err != nil {
				t.Fatal(err)
			}
			if again.Next != l.Next || again.Pending() != l.Pending() {
				t.Fatalf("firing %d: rebuilt from the log, next %d and %d pending; want %d, %d", f, again.Next, again.Pending(), l.Next, l.Pending())
			}
			if _, meta, err = g.load(st); err != nil { // the rebuilt copy is taken from the cache no more
				t.Fatal(err)
			}
			if _, err := g.save(st, again, meta, []byte{logMarks}); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("%d firings: %d bytes of new marks; the log wrote %d bytes (%d snapshots), %.2f× the marks; writing the whole ledger each firing: %d bytes, %.1f× the marks",
		firings, marksBytes, written, snapshotsWritten, float64(written)/float64(marksBytes), fullSnapshots, float64(fullSnapshots)/float64(marksBytes))
	if written > 3*marksBytes {
		t.Errorf("the log wrote %d bytes for %d bytes of marks: more than O(new marks)", written, marksBytes)
	}
}
