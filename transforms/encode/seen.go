package encode

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/mtime"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/state"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/timers"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/google/uuid"

	"github.com/outflow/outflow/internal/ack"
	"github.com/outflow/outflow/internal/metricname"
	"github.com/outflow/outflow/transforms/route"
)

func init() {
	register.Function3x2(tagWindow)
	register.DoFn7x1[context.Context, state.Provider, timers.Provider, string, Chunk,
		func(beam.EventTime, string, Chunk), func(int32, []byte), error](&dropSeenFn{})
	register.Emitter3[beam.EventTime, string, Chunk]()
	register.Emitter2[int32, []byte]()
}

// DropSeen drops from each pane of a window of size d the impressions that an earlier
// pane of the same key and window held: in a stream, a copy that arrives after its
// window fired (CONTRACT §3: copies are dropped within a window and its allowed
// lateness; object stores hold each impression once). Copies within one pane are
// left to the sinks, which drop them as they encode. The ids already sent are kept
// per key and window, 16 bytes each, until the watermark passes the window's end
// plus lateness.
//
// prism keeps a windowed stateful DoFn's state only until its window's end, not its
// allowed lateness, so the ids are kept in the global window, under the key and the
// window's start, and an event-time timer clears them.
//
// The copies it drops are finished: marks says so (package ack).
//
// In and out: PCollection<KV<string, Chunk>>, keyed by route.Key, from Objects;
// marks: PCollection<KV<int32, []byte>>.
func DropSeen(s beam.Scope, d, lateness time.Duration, chunks beam.PCollection) (kept, marks beam.PCollection) {
	s = s.Scope("encode.DropSeen")
	tagged := beam.WindowInto(s, window.NewGlobalWindows(), beam.ParDo(s, tagWindow, chunks))
	kept, marks = beam.ParDo2(s, &dropSeenFn{Size: d, Lateness: lateness,
		Seen: state.MakeValueState[[]byte]("seen"), Expire: timers.InEventTime("expire")}, tagged)
	return beam.WindowInto(s, window.NewFixedWindows(d), kept), marks
}

// tagWindow adds the element's window start to its key: key@startMs.
func tagWindow(w beam.Window, key string, c Chunk) (string, Chunk) {
	return key + "@" + strconv.FormatInt(w.(window.IntervalWindow).Start.Milliseconds(), 10), c
}

type dropSeenFn struct {
	Size, Lateness time.Duration

	Seen   state.Value[[]byte] // ids of the window's earlier panes, 16 bytes each
	Expire timers.EventTime    // when the window can take no more impressions

	duplicates map[string]metricname.Counter
}

func (fn *dropSeenFn) ProcessElement(ctx context.Context, sp state.Provider, tp timers.Provider, tagged string, c Chunk,
	emit func(beam.EventTime, string, Chunk), marks func(int32, []byte)) error {
	at := strings.LastIndexByte(tagged, '@')
	start, err := strconv.ParseInt(tagged[at+1:], 10, 64)
	if at < 0 || err != nil {
		return fmt.Errorf("encode: key %q holds no window start", tagged)
	}
	key, end := tagged[:at], time.UnixMilli(start).Add(fn.Size)
	seen, ok, err := fn.Seen.Read(sp)
	if err != nil {
		return fmt.Errorf("encode: read the ids seen for %s: %w", tagged, err)
	}
	if !ok { // the window's first pane
		fn.Expire.Set(tp, end.Add(fn.Lateness))
	}
	ids := make(map[uuid.UUID]bool, len(seen)/16)
	for i := 0; i+16 <= len(seen); i += 16 {
		ids[uuid.UUID(seen[i:i+16])] = true
	}
	kept, dropped, err := c.Without(ids)
	if err != nil {
		return fmt.Errorf("encode: %s: %w", key, err)
	}
	if len(dropped) > 0 {
		var t ack.Tally
		t.Done(dropped...) // finished: an earlier pane took them
		t.Emit(marks)
		fn.counter(key).Inc(ctx, int64(len(dropped)))
	}
	es, err := kept.entries()
	if err != nil {
		return fmt.Errorf("encode: %s: %w", key, err)
	}
	for _, e := range es {
		if id := e.id; !ids[id] {
			ids[id] = true
			seen = append(seen, id[:]...)
		}
	}
	if err := fn.Seen.Write(sp, seen); err != nil {
		return fmt.Errorf("encode: write the ids seen for %s: %w", tagged, err)
	}
	if kept.N > 0 {
		emit(mtime.FromTime(end.Add(-time.Millisecond)), key, kept) // back into its window
	}
	return nil
}

func (fn *dropSeenFn) OnTimer(ctx context.Context, sp state.Provider, tp timers.Provider, tagged string, _ timers.Context,
	_ func(beam.EventTime, string, Chunk), _ func(int32, []byte)) error {
	return fn.Seen.Clear(sp)
}

func (fn *dropSeenFn) counter(key string) metricname.Counter {
	if fn.duplicates == nil {
		fn.duplicates = map[string]metricname.Counter{}
	}
	id, _ := route.SplitKey(key)
	c, ok := fn.duplicates[id]
	if !ok {
		c = metricname.NewCounter(id, metricname.Duplicates)
		fn.duplicates[id] = c
	}
	return c
}

// Without returns c without the impressions whose ids are in drop, and the origins
// of those it left out.
func (c Chunk) Without(drop map[uuid.UUID]bool) (Chunk, []uint64, error) {
	c.flush()
	es, err := c.entries()
	if err != nil {
		return c, nil, err
	}
	keep := make([]bool, len(es))
	var dropped []uint64
	var out Chunk
	for i, e := range es {
		if keep[i] = !drop[e.id]; keep[i] {
			out.appendEntry(e.id, e.origin, e.n)
		} else {
			dropped = append(dropped, e.origin)
		}
	}
	if len(dropped) == 0 {
		return c, nil, nil
	}
	if out.Members, err = c.rewrite(nil, es, keep); err != nil {
		return c, nil, err
	}
	return out, dropped, nil
}
