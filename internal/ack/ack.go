// Package ack follows each input record of a stream until every copy of what it
// held is finished (delivered, stored, dead-lettered, or dropped as a duplicate), so
// that the source commits its position only past records that are finished
// (CONTRACT §3: offsets are committed after what was read up to them is delivered).
//
// Records are named by their origin (impression.Impression.Origin): the source's
// partition in the top 16 bits, the record's offset below. The pipeline's DoFns
// report here as copies come and go: the reader when a record is parsed (Read), the
// router for the copies it makes (Hold), the sinks when copies are finished (Done).
//
// The counts live in this process: they see the DoFns of the embedded prism runner
// and of LOOPBACK workers. With remote workers nothing is reported here, and nothing
// is committed. Until Enable is called every function is a no-op (batch pipelines).
package ack

import (
	"slices"
	"sync"
	"sync/atomic"
)

const offsetBits = 48

// Origin names record offset of partition.
func Origin(partition int32, offset int64) uint64 {
	return uint64(partition)<<offsetBits | uint64(offset)&(1<<offsetBits-1)
}

func split(origin uint64) (int32, int64) {
	return int32(origin >> offsetBits), int64(origin & (1<<offsetBits - 1))
}

var (
	enabled  atomic.Bool
	branches int // routers each impression passes through, one per group of integrations

	mu    sync.Mutex
	parts = map[int32]*partition{}
)

// partition is what is in flight of one partition.
type partition struct {
	offsets []int64       // records read and not yet finished, ascending
	left    map[int64]int // by offset: copies not yet finished
	last    int64         // the highest offset read
}

// Enabled says whether records are being followed: callers skip gathering origins
// when they are not.
func Enabled() bool { return enabled.Load() }

// Enable starts counting, for a pipeline whose impressions each pass through n
// routers (route.Fanout).
func Enable(n int) {
	mu.Lock()
	defer mu.Unlock()
	branches, parts = n, map[int32]*partition{}
	enabled.Store(true)
}

// Read records a record parsed into valid impressions and invalid lines: each
// impression is to be routed by every router, each invalid line dead-lettered.
func Read(origin uint64, valid, invalid int) {
	if !enabled.Load() {
		return
	}
	p, off := split(origin)
	mu.Lock()
	defer mu.Unlock()
	pt := parts[p]
	if pt == nil {
		pt = &partition{left: map[int64]int{}, last: -1}
		parts[p] = pt
	}
	if _, ok := pt.left[off]; !ok {
		// Offsets are read in order; one read again (after a failed bundle) goes back
		// into its place.
		i, _ := slices.BinarySearch(pt.offsets, off)
		pt.offsets = slices.Insert(pt.offsets, i, off)
	}
	pt.left[off] += valid*branches + invalid
	pt.last = max(pt.last, off)
}

// Hold records n more copies in flight of the record at origin; n may be negative
// (a router that routes an impression nowhere finishes its share).
func Hold(origin uint64, n int) {
	if !enabled.Load() || n == 0 {
		return
	}
	p, off := split(origin)
	mu.Lock()
	defer mu.Unlock()
	if pt := parts[p]; pt != nil {
		if _, ok := pt.left[off]; ok {
			pt.left[off] += n
		}
	}
}

// Done records one copy finished for each origin.
func Done(origins ...uint64) {
	if !enabled.Load() {
		return
	}
	mu.Lock()
	defer mu.Unlock()
	for _, o := range origins {
		p, off := split(o)
		if pt := parts[p]; pt != nil {
			if _, ok := pt.left[off]; ok {
				pt.left[off]--
			}
		}
	}
}

// Committable returns, by partition, the offset of the first record not finished
// (the one after the last read when all are): the position to commit.
func Committable() map[int32]int64 {
	mu.Lock()
	defer mu.Unlock()
	out := map[int32]int64{}
	for p, pt := range parts {
		n := 0
		for n < len(pt.offsets) && pt.left[pt.offsets[n]] <= 0 {
			delete(pt.left, pt.offsets[n])
			n++
		}
		pt.offsets = pt.offsets[n:]
		if len(pt.offsets) > 0 {
			out[p] = pt.offsets[0]
		} else {
			out[p] = pt.last + 1
		}
	}
	return out
}
