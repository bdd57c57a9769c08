package ack

import (
	"math/rand/v2"
	"testing"
)

// A partition of records with gaps between their offsets, each parsed into some
// copies to finish: whatever order the marks arrive in, and however they are grouped
// into elements, Next never passes a record that is not finished, and reaches the end
// once all marks are in.
func TestLedgerOutOfOrder(t *testing.T) {
	type mark struct {
		off    int64
		tally  func(*Tally)
		isDone bool
	}
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 300 {
		const p = 3
		start := int64(r.IntN(1000))
		pos := start
		var marks []mark
		type rec struct{ off, marks int64 }
		var recs []rec
		for range 1 + r.IntN(20) {
			off := pos + int64(r.IntN(3)) // gaps: offsets the reader never saw
			copies := r.IntN(4)
			from := pos
			marks = append(marks, mark{off, func(t *Tally) { t.Read(Origin(p, off), from, copies) }, false})
			for range copies {
				marks = append(marks, mark{off, func(t *Tally) { t.Done(Origin(p, off)) }, true})
			}
			recs = append(recs, rec{off, int64(copies) + 1})
			pos = off + 1
		}
		marks = append(marks, mark{-1, func(t *Tally) { t.Start(p, start) }, false})
		r.Shuffle(len(marks), func(i, j int) { marks[i], marks[j] = marks[j], marks[i] })

		l := NewLedger()
		in := map[int64]int64{} // marks in, by record
		for i := 0; i < len(marks); {
			var tl Tally
			n := 1 + r.IntN(4) // several marks in one element
			for ; n > 0 && i < len(marks); n, i = n-1, i+1 {
				marks[i].tally(&tl)
				in[marks[i].off]++
			}
			tl.Emit(func(part int32, b []byte) {
				if part != p {
					t.Fatalf("marks for partition %d, want %d", part, p)
				}
				if _, err := l.Add(b); err != nil {
					t.Fatal(err)
				}
			})
			if r.IntN(3) == 0 { // through the coder, as the committer's state
				data, _ := l.MarshalBinary()
				var back Ledger
				if err := back.UnmarshalBinary(data); err != nil {
					t.Fatal(err)
				}
				l = &back
			}
			if in[-1] == 0 && l.Next != -1 {
				t.Fatalf("round %d: Next %d before the start mark", round, l.Next)
			}
			for _, rc := range recs {
				if l.Next > rc.off && in[rc.off] != rc.marks {
					t.Fatalf("round %d: Next %d passed record %d with %d of its %d marks in", round, l.Next, rc.off, in[rc.off], rc.marks)
				}
			}
		}
		if l.Next != pos || l.Pending() != 0 {
			t.Fatalf("round %d: after every mark Next = %d (pending %d), want %d", round, l.Next, l.Pending(), pos)
		}
	}
}

// Marks of several partitions go out as one element each; damaged state and marks
// are errors.
func TestTallyAndCorruption(t *testing.T) {
	var tl Tally
	tl.Start(1, 5)
	tl.Read(Origin(1, 5), 5, 2)
	tl.Read(Origin(2, 9), 9, 1)
	tl.Done(Origin(1, 5), Origin(2, 9), Origin(1, 5))
	ledgers := map[int32]*Ledger{1: NewLedger(), 2: NewLedger()}
	tl.Emit(func(p int32, b []byte) {
		if _, err := ledgers[p].Add(b); err != nil {
			t.Fatal(err)
		}
	})
	if !tl.Empty() {
		t.Error("the tally is not empty after Emit")
	}
	if ledgers[1].Next != 6 || ledgers[2].Next != -1 || ledgers[2].Pending() != 1 {
		t.Errorf("partition 1 Next %d (want 6), partition 2 Next %d pending %d (want -1, 1)",
			ledgers[1].Next, ledgers[2].Next, ledgers[2].Pending())
	}
	if _, err := NewLedger().Add([]byte{9, 1}); err == nil {
		t.Error("an unknown mark was taken")
	}
	data, _ := ledgers[2].MarshalBinary()
	if err := new(Ledger).UnmarshalBinary(data[:len(data)-1]); err == nil {
		t.Error("a truncated ledger was taken")
	}
}
