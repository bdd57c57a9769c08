package delivery

import (
	"bytes"
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/outflow/outflow/internal/impression"
)

// The drain: one pass over a key's state, the same for every wake (an arrival, the
// timer). It decides from the schedule alone, applies the policy's verdicts, packs
// fresh impressions into full requests, schedules requests with the limiter and says
// when to come back. It knows Beam only through store, calls and effects, so tests run
// it on a fake clock.

// arrival is impressions that came in, and their size in the binary coding.
type arrival struct {
	imps  []impression.Impression
	bytes int
}

// drainRun is one pass over a key: it takes in what arrived, collects answers, packs
// and starts requests while the destination takes them, and says when to come back.
type drainRun struct {
	now     time.Time
	d       *dest
	st      store
	calls   calls
	fx      effects
	sc      schedule
	cont    *contents
	loaded  [2]bool // the queue, the parts Bag read in this pass
	changed bool    // a Bag changed: a new generation
	packed  bool    // fresh was read and rewritten (see packIfDue)
	wake    time.Time
}

// effects is what a drain reports: deliveries, dead letters, answers (metrics).
type effects interface {
	delivered(d *dest, b *Batch, now time.Time)
	// deadLetter dead-letters b; class is one of metricname.DeadLetterReasons.
	deadLetter(d *dest, b *Batch, status int, class, reason string)
	// overflow dead-letters impressions beyond max_pending_impressions, and says so.
	overflow(d *dest, b *Batch, reason string)
	answered(d *dest, c *call)
	// held says, after each pass, the impression time of the oldest impression the
	// key holds (0: none).
	held(d *dest, oldest int64)
}

// drain runs one pass over a key's state at now and returns when to come back (zero:
// nothing is pending).
func drain(now time.Time, d *dest, st store, cs calls, fx effects, in *arrival) (time.Time, error) {
	sc, err := st.schedule()
	if err != nil {
		return time.Time{}, err
	}
	r := &drainRun{now: now, d: d, st: st, calls: cs, fx: fx, sc: sc, cont: cachedContents(sc.Gen)}
	if err := r.run(in); err != nil {
		return time.Time{}, err
	}
	if r.changed {
		r.sc.Gen = newGen()
	}
	if !r.sc.empty() {
		storeContents(r.sc.Gen, r.cont)
	}
	fx.held(d, r.sc.oldest())
	return r.wake, st.setSchedule(r.sc) // an empty schedule clears the state

}

func (r *drainRun) run(in *arrival) error {
	if in != nil && r.d.MaxPending > 0 {
		in = r.bound(in)
	}
	if in != nil {
		if err := r.addFresh(*in); err != nil {
			return err
		}
	}
	if err := r.collect(); err != nil {
		return err
	}
	r.afterRecovery()
	if reason := r.d.lim.goneReason(); reason != "" {
		if err := r.abandon("the endpoint is gone: " + reason); err != nil {
			return err
		}
	} else if err := r.send(); err != nil {
		return err
	}
	return r.compact()
}

// addFresh adds impressions to fresh, where they wait to be packed.
func (r *drainRun) addFresh(in arrival) error {
	if len(in.imps) == 0 {
		return nil
	}
	if err := r.st.addFresh(Batch{Integration: r.d.ID, Imps: in.imps}); err != nil {
		return err
	}
	if o := oldestOf(in.imps); r.sc.FreshN == 0 || o < r.sc.FreshOldest {
		r.sc.FreshOldest = o
	}
	if r.sc.FreshN == 0 {
		r.sc.FreshSince = r.now.UnixMilli()
	}
	r.sc.FreshLast = r.now.UnixMilli()
	r.sc.FreshN += len(in.imps)
	r.sc.FreshBytes += in.bytes
	return nil
}

// binarySize is the size of imps in the binary coding, as arrivals count it.
func binarySize(imps []impression.Impression) int {
	n := 0
	for i := range imps {
		n += len(impression.AppendBinary(nil, imps[i]))
	}
	return n
}

// bound keeps of what arrived what fits under max_pending_impressions; the rest is
// dead-lettered for replay, so an outage costs bounded memory and no data.
func (r *drainRun) bound(in *arrival) *arrival {
	room := max(0, r.d.MaxPending-r.sc.pending())
	if room >= len(in.imps) {
		return in
	}
	over := in.imps[room:]
	r.fx.overflow(r.d, &Batch{ID: batchID(r.d.ID, over), Integration: r.d.ID, Imps: over},
		fmt.Sprintf("the destination is not keeping up: %d impressions were already held for it (max_pending_impressions); replay once it recovers", r.sc.pending()))
	kept := &arrival{imps: in.imps[:room]}
	if len(in.imps) > 0 {
		kept.bytes = in.bytes * room / len(in.imps)
	}
	return kept
}

func (r *drainRun) wakeAt(t time.Time) {
	if t.Before(r.now) {
		t = r.now
	}
	if r.wake.IsZero() || t.Before(r.wake) {
		r.wake = t
	}
}

// collect applies the answers that came in.
func (r *drainRun) collect() error {
	var next []entry
	var again []Batch
	var from []entry // the entry each of again came from
	for _, e := range r.sc.Entries {
		c := r.calls.get(e.key())
		if c == nil || !c.finished() {
			next = append(next, e)
			continue
		}
		r.calls.forget(e.key())
		if c.notSent { // paused while it waited for its slot: not an attempt
			until, _ := r.d.lim.pausedAt(r.now)
			e.NotBefore = max(e.NotBefore, until.UnixMilli())
			next = append(next, e)
			continue
		}
		r.fx.answered(r.d, c)
		p := r.d.Policy
		if c.outcome.Kind == Split {
			r.d.lim.shrink(len(c.batch.Imps))
			p.MaxBatchEvents = r.d.current().Limits().MaxEvents
		}
		v := decide(r.now, c.sentAt, c.batch, c.outcome, c.retryAfter, p)
		if v.delivered != nil {
			r.fx.delivered(r.d, v.delivered, r.now)
		}
		for i := range v.dead {
			r.fx.deadLetter(r.d, &v.dead[i].Batch, v.dead[i].status, deadClass(v.dead[i].status), v.dead[i].reason)
		}
		for _, b := range v.again {
			again, from = append(again, b), append(from, e)
		}
		if err := r.addFresh(arrival{imps: v.fresh, bytes: binarySize(v.fresh)}); err != nil {
			return err
		}
	}
	r.sc.Entries = next
	for i, b := range again {
		if err := r.again(from[i], b); err != nil {
			return err
		}
	}
	return nil
}

// again schedules b, which came from entry e: whole, in e's place under e's tag; a
// part of it, in the parts Bag.
func (r *drainRun) again(e entry, b Batch) error {
	w, tag := e.where, e.Tag
	if b.ID != e.ID {
		w, tag = where{Part: true, Pos: r.sc.PartsLen}, 0
		if err := r.append(w, b); err != nil {
			return err
		}
		r.sc.PartsLen++
	}
	r.addEntry(entry{ID: b.ID, Tag: tag, where: w, N: len(b.Imps), Oldest: oldestOf(b.Imps),
		NotBefore: b.NotBefore, FirstTry: b.FirstTry, Attempts: b.Attempts, Status: b.Status, Reason: b.Reason})
	return nil
}

// fit splits the batch of entry e into requests the destination takes, if a 413
// taught that it takes fewer events than e has since it was packed: sending it
// whole would only draw another 413. It reports whether it did.
func (r *drainRun) fit(e *entry) (bool, error) {
	limit := r.d.current().Limits().MaxEvents
	if limit == 0 || e.N <= limit {
		return false, nil
	}
	b, err := r.contents(e.where)
	if err != nil {
		return false, err
	}
	b.ID = e.ID
	e.history(&b)
	from := *e
	r.sc.Entries = slices.DeleteFunc(r.sc.Entries, func(x entry) bool { return x.Tag == from.Tag })
	for _, piece := range b.pieces(limit) {
		if err := r.again(from, piece); err != nil {
			return false, err
		}
	}
	return true, nil
}

// afterRecovery makes every batch waiting to be retried after a failure due now, once
// the destination is back from an outage (its circuit closed since this key last
// looked): their waits were spent on the outage, and a schedule's long ones (hours,
// for a webhook) would otherwise hold them long after it ended.
func (r *drainRun) afterRecovery() {
	rec := r.d.lim.recoveredAt().UnixMilli()
	if rec <= r.sc.Recovered {
		return
	}
	r.sc.Recovered = rec
	for i := range r.sc.Entries {
		e := &r.sc.Entries[i]
		if e.NotBefore > r.now.UnixMilli() && failure(e.Status) && r.calls.get(e.key()) == nil {
			e.NotBefore = 0
		}
	}
}

// failure reports whether an answer of status (0: none came) is one that counts
// towards an outage.
func failure(status int) bool {
	return status == 0 || status == http.StatusRequestTimeout || status >= 500
}

// addEntry adds e to the schedule, with a new tag unless it has one.
func (r *drainRun) addEntry(e entry) *entry {
	if e.Tag == 0 {
		r.sc.Seq++
		e.Tag = r.sc.Seq
	}
	r.sc.Entries = append(r.sc.Entries, e)
	return &r.sc.Entries[len(r.sc.Entries)-1]
}

// append adds b's contents (without history) to its Bag at w.
func (r *drainRun) append(w where, b Batch) error {
	c := Batch{ID: b.ID, Integration: b.Integration, Imps: b.Imps}
	if err := r.st.add(w.Part, c); err != nil {
		return err
	}
	r.cont.set(w, &c)
	r.changed = true
	return nil
}

// send starts requests while the destination takes them: batches due again first,
// then those never sent, in order, packing fresh impressions into full requests when
// none is left.
func (r *drainRun) send() error {
	for {
		e := r.nextDue()
		if e == nil {
			if r.sc.Next >= r.sc.QueueLen {
				packed, err := r.packIfDue()
				if err != nil {
					return err
				}
				if packed == 0 {
					break
				}
				continue
			}
			w := where{Pos: r.sc.Next}
			b, err := r.contents(w)
			if err != nil {
				return err
			}
			r.sc.Next++
			r.sc.QueuedN -= len(b.Imps)
			if len(r.sc.QueueOldest) > 0 {
				r.sc.QueueOldest = r.sc.QueueOldest[1:]
			}
			e = r.addEntry(entry{ID: b.ID, where: w, N: len(b.Imps), Oldest: oldestOf(b.Imps)})
			if c := r.calls.get(e.key()); c != nil {
				continue // a pass whose state was not kept (a retried bundle) sent it
			}
		}
		if split, err := r.fit(e); err != nil || split {
			if err != nil {
				return err
			}
			continue
		}
		at, wait, ok := r.d.lim.acquire(r.now, maxSchedule)
		if !ok {
			r.wakeAt(r.now.Add(max(wait, minPoll)))
			break
		}
		b, err := r.contents(e.where)
		if err != nil {
			r.d.lim.cancel()
			return err
		}
		b.ID = e.ID
		e.history(&b)
		r.calls.start(r.d, e.key(), b, at)
	}
	r.wakeForRest()
	return nil
}

// nextDue is the entry due longest ago and not in flight, or nil.
func (r *drainRun) nextDue() *entry {
	var due *entry
	for i := range r.sc.Entries {
		e := &r.sc.Entries[i]
		if e.NotBefore <= r.now.UnixMilli() && (due == nil || e.NotBefore < due.NotBefore) && r.calls.get(e.key()) == nil {
			due = e
		}
	}
	return due
}

// wakeForRest sets the wake for answers in flight, batches waiting for their time or
// a slot, and fresh impressions waiting to fill a request. Answers are collected
// together, once the last request scheduled should have its (within maxPoll): each
// wake costs the runner a bundle, and the next requests are scheduled then.
func (r *drainRun) wakeForRest() {
	var collect time.Time
	for _, e := range r.sc.Entries {
		if c := r.calls.get(e.key()); c != nil {
			if t := pollAt(r.now, c.at); t.After(collect) {
				collect = t
			}
		} else if e.NotBefore > r.now.UnixMilli() {
			r.wakeAt(time.UnixMilli(e.NotBefore))
		}
	}
	if !collect.IsZero() {
		if limit := r.now.Add(maxPoll); collect.After(limit) {
			collect = limit
		}
		r.wakeAt(collect)
	}
	if r.sc.Next < r.sc.QueueLen || r.sc.FreshN > 0 {
		if wait, blocked := r.d.lim.blocked(r.now); blocked {
			r.wakeAt(r.now.Add(max(wait, minPoll)))
		} else if r.sc.FreshN > 0 {
			r.wakeAt(r.flushAt())
		}
	}
}

// flushAt is when fresh impressions that fill no request may go in a smaller one.
func (r *drainRun) flushAt() time.Time {
	return time.UnixMilli(min(r.sc.FreshLast+flushAfter.Milliseconds(), r.sc.FreshSince+flushMax.Milliseconds()))
}

// pollAt is when to look for the answer to a request that leaves at `at`: soon after
// it leaves, then at intervals growing with its age.
func pollAt(now, at time.Time) time.Time {
	if at.After(now) {
		return at.Add(minPoll)
	}
	return now.Add(min(maxPoll, max(minPoll, now.Sub(at)/2)))
}

// packIfDue packs fresh impressions into batches at the end of the queue when they
// fill a request, or are due (flushAt), and the destination could take a request now.
// It returns how many batches it queued.
func (r *drainRun) packIfDue() (int, error) {
	sc := &r.sc
	// Once per pass: the Go SDK (v2.77) answers a Bag read that follows a Clear in the
	// same invocation from its stale first read, so fresh is read at most once.
	if sc.FreshN == 0 || r.packed {
		return 0, nil
	}
	dest := r.d.current()
	lim := dest.Limits()
	full := (lim.MaxEvents > 0 && sc.FreshN >= lim.MaxEvents) || (lim.MaxBytes > 0 && sc.FreshBytes >= lim.MaxBytes)
	due := !r.now.Before(r.flushAt())
	if !full && !due {
		return 0, nil
	}
	if _, blocked := r.d.lim.blocked(r.now); blocked {
		return 0, nil
	}
	r.packed = true
	fresh, err := r.st.fresh()
	if err != nil {
		return 0, err
	}
	var imps []impression.Impression
	for _, f := range fresh {
		imps = append(imps, f.Imps...)
	}
	// The same impressions form the same batches whatever order they arrived in.
	slices.SortFunc(imps, func(a, b impression.Impression) int {
		return cmp.Or(cmp.Compare(a.Time, b.Time), bytes.Compare(a.ID[:], b.ID[:]))
	})
	// Those of keys the destination throttles stay in fresh until their key may go.
	imps, waiting := r.d.lim.admit(r.now, imps)
	batches, tooBig, reason, err := pack(dest, r.d.ID, imps)
	if err != nil {
		return 0, err
	}
	if len(tooBig) > 0 {
		r.fx.deadLetter(r.d, &Batch{ID: batchID(r.d.ID, tooBig), Integration: r.d.ID, Imps: tooBig}, 0, "too_large", reason)
	}
	var rest []impression.Impression
	if !due && len(batches) > 0 { // the last batch may wait for more
		rest = batches[len(batches)-1].Imps
		batches = batches[:len(batches)-1]
	}
	rest = slices.Concat(rest, waiting)
	if err := r.st.clearFresh(); err != nil {
		return 0, err
	}
	sc.FreshN, sc.FreshBytes, sc.FreshOldest = len(rest), 0, oldestOf(rest)
	if len(rest) > 0 {
		if err := r.st.addFresh(Batch{Integration: r.d.ID, Imps: rest}); err != nil {
			return 0, err
		}
		sc.FreshBytes = binarySize(rest)
		if len(waiting) > 0 { // looked at again within flushAfter
			sc.FreshSince, sc.FreshLast = r.now.UnixMilli(), r.now.UnixMilli()
		}
	} else {
		sc.FreshSince, sc.FreshLast = 0, 0
	}
	for _, b := range batches {
		if err := r.append(where{Pos: sc.QueueLen}, b); err != nil {
			return 0, err
		}
		sc.QueueLen++
		sc.QueuedN += len(b.Imps)
		sc.QueueOldest = append(sc.QueueOldest, oldestOf(b.Imps))
	}
	return len(batches), nil
}

// contents returns the batch at w, reading its Bag only when this worker does not
// hold it for the schedule's generation.
func (r *drainRun) contents(w where) (Batch, error) {
	if b := r.cont.get(w); b != nil {
		return *b, nil
	}
	if err := r.load(w.Part); err != nil {
		return Batch{}, err
	}
	if b := r.cont.get(w); b != nil {
		return *b, nil
	}
	return Batch{}, fmt.Errorf("delivery: %s: no batch at %+v of the state (%d queued, %d parts)", r.d.ID, w, r.sc.QueueLen, r.sc.PartsLen)
}

func (r *drainRun) load(part bool) error {
	i := bagIndex(part)
	if r.loaded[i] {
		return nil
	}
	bs, err := r.st.bag(part)
	if err != nil {
		return err
	}
	r.loaded[i] = true
	for pos := range bs {
		r.cont.set(where{Part: part, Pos: pos}, &bs[pos])
	}
	return nil
}

// abandon dead-letters everything pending that is not in flight.
func (r *drainRun) abandon(reason string) error {
	var next []entry
	for _, e := range r.sc.Entries {
		if c := r.calls.get(e.key()); c != nil {
			next = append(next, e)
			r.wakeAt(pollAt(r.now, c.at))
			continue
		}
		b, err := r.contents(e.where)
		if err != nil {
			return err
		}
		e.history(&b)
		r.fx.deadLetter(r.d, &b, b.Status, "gone", reason)
	}
	r.sc.Entries = next
	for ; r.sc.Next < r.sc.QueueLen; r.sc.Next++ {
		b, err := r.contents(where{Pos: r.sc.Next})
		if err != nil {
			return err
		}
		r.fx.deadLetter(r.d, &b, 0, "gone", reason)
	}
	r.sc.QueuedN, r.sc.QueueOldest = 0, nil
	if r.sc.FreshN > 0 {
		fresh, err := r.st.fresh()
		if err != nil {
			return err
		}
		for i := range fresh {
			b := fresh[i]
			b.ID = batchID(r.d.ID, b.Imps)
			r.fx.deadLetter(r.d, &b, 0, "gone", reason)
		}
		if err := r.st.clearFresh(); err != nil {
			return err
		}
		r.sc.FreshN, r.sc.FreshBytes, r.sc.FreshSince, r.sc.FreshLast = 0, 0, 0, 0
	}
	return nil
}

// compact rewrites a Bag once more of it is no longer needed than needed, and clears
// it once none of it is.
func (r *drainRun) compact() error {
	for _, part := range []bool{false, true} {
		// What is still needed: the entries' batches, then (queue) those never sent,
		// so that the cursor stays in front of the latter.
		var live []where
		for _, e := range r.sc.Entries {
			if e.Part == part {
				live = append(live, e.where)
			}
		}
		n := &r.sc.PartsLen
		if !part {
			n = &r.sc.QueueLen
			for pos := r.sc.Next; pos < r.sc.QueueLen; pos++ {
				live = append(live, where{Pos: pos})
			}
		}
		dead := *n - len(live)
		if dead == 0 || (len(live) > 0 && (dead < compactAfter || dead <= len(live))) {
			continue
		}
		batches := make([]Batch, len(live))
		for i, w := range live {
			b, err := r.contents(w)
			if err != nil {
				return err
			}
			batches[i] = b
		}
		if err := r.st.clear(part); err != nil {
			return err
		}
		*r.cont.slot(part) = nil
		moved := map[where]int{}
		for i, b := range batches {
			if err := r.append(where{Part: part, Pos: i}, b); err != nil {
				return err
			}
			moved[live[i]] = i
		}
		for i := range r.sc.Entries {
			if e := &r.sc.Entries[i]; e.Part == part {
				e.Pos = moved[e.where]
			}
		}
		if !part {
			r.sc.Next = len(batches) - (r.sc.QueueLen - r.sc.Next)
		}
		*n = len(batches)
		r.changed = true
	}
	return nil
}
