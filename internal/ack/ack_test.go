package ack

import (
	"maps"
	"testing"
)

// A partition's position moves past a record only once every copy of it is finished,
// and only over a finished prefix.
func TestCommittable(t *testing.T) {
	Enable(2) // two routers
	check := func(when string, want map[int32]int64) {
		t.Helper()
		if got := Committable(); !maps.Equal(got, want) {
			t.Errorf("%s: committable %v, want %v", when, got, want)
		}
	}
	a, b, c := Origin(1, 10), Origin(1, 12), Origin(1, 13) // offset 11 holds no record
	Read(a, 1, 0)                                          // one impression
	Read(b, 0, 1)                                          // one invalid line
	Read(c, 0, 0)                                          // a blank record
	check("nothing finished", map[int32]int64{1: 10})

	Hold(a, 1)  // the first router routes it to two integrations
	Hold(a, -1) // the second to none
	Done(a)
	check("one copy of a left", map[int32]int64{1: 10})
	Done(b) // b's invalid line dead-lettered: b is finished, but a is not
	check("a still in flight", map[int32]int64{1: 10})
	Done(a)
	check("all finished", map[int32]int64{1: 14})

	Read(Origin(2, 0), 1, 0)
	Done(Origin(7, 3)) // unknown: ignored
	check("another partition", map[int32]int64{1: 14, 2: 0})
}

// Until enabled, nothing is counted.
func TestDisabled(t *testing.T) {
	enabled.Store(false)
	parts = map[int32]*partition{}
	Read(Origin(0, 1), 1, 0)
	if got := Committable(); len(got) != 0 {
		t.Errorf("committable %v while disabled", got)
	}
}
