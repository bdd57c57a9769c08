package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/io/objectio"
	"github.com/outflow/outflow/transforms/encode"
)

// window is a fixed event-time window [Start, End), in Unix ms.
type window struct{ Start, End int64 }

// windowOf is the window of size d that holds t.
func windowOf(t time.Time, d time.Duration) window {
	start := encode.WindowStart(t, d).UnixMilli()
	return window{Start: start, End: start + d.Milliseconds()}
}

func (w window) holds(ms int64) bool { return w.Start <= ms && ms < w.End }

// timeRange is the range checked, --since to --until; a zero end is open.
type timeRange struct{ from, to time.Time }

// holds reports whether an impression at ms (Unix) is in the range.
func (r timeRange) holds(ms int64) bool {
	return (r.from.IsZero() || ms >= r.from.UnixMilli()) && (r.to.IsZero() || ms < r.to.UnixMilli())
}

// meets reports whether [start, end) and the range have a time in common.
func (r timeRange) meets(start, end time.Time) bool {
	return (r.from.IsZero() || end.After(r.from)) && (r.to.IsZero() || start.Before(r.to))
}

// stored is what an integration's data objects hold for one window, within the range
// checked.
type stored struct {
	objects int
	records int64
	strays  int64 // records outside their object's time range, or its window
	ids     idSet // the distinct impressions
}

// object is a data object of the store.
type object struct {
	key  string
	name encode.ObjectName
}

// inventory reads every data object under the prefix of integration in (stored as
// t) that holds times in r, whatever integration id, format, shard or pane its name
// says (an earlier id, an earlier run's format), and sums up what each window holds.
// An object belongs to the window that holds its start: runs whose --since or
// --until cut a window name their objects by the part covered, later runs add
// objects of what earlier ones lacked, and a stream writes a window once per pane.
func inventory(ctx context.Context, log *slog.Logger, in config.Integration, t objectio.Target, r timeRange) (map[window]*stored, error) {
	store, err := objectio.NewStore(ctx, t.Kind, t.Settings)
	if err != nil {
		return nil, err
	}
	reader, ok := store.(objectio.Reader)
	if !ok {
		return nil, fmt.Errorf("the %s store cannot be read back", t.Kind)
	}
	prefix := t.Spec.Prefix
	if prefix != "" {
		prefix += "/"
	}
	keys, err := reader.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", store.Where(prefix), err)
	}
	// Windows are read one at a time, so only one window's ids are in memory.
	byWindow := map[window][]object{}
	for _, key := range keys {
		name, ok := encode.ParseKey(strings.TrimPrefix(key, prefix))
		if !ok {
			continue // not a data object
		}
		if !r.meets(name.Start, name.End) {
			continue
		}
		w := windowOf(name.Start, in.Window.D())
		byWindow[w] = append(byWindow[w], object{key: key, name: name})
	}
	out := map[window]*stored{}
	for w, objs := range byWindow {
		st := &stored{objects: len(objs)}
		seen := map[uuid.UUID]bool{}
		for _, o := range objs {
			f, _ := encode.FormatOf(o.name.Ext)
			recs, err := readObject(ctx, reader, o.key, f)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", store.Where(o.key), err)
			}
			for _, rec := range recs {
				if !r.holds(rec.Time) {
					continue
				}
				st.records++
				if !w.holds(rec.Time) || rec.Time < o.name.Start.UnixMilli() || rec.Time >= o.name.End.UnixMilli() {
					st.strays++
				}
				imp := rec.Impression(in.Tenant)
				if id := imp.ComputeID(); !seen[id] {
					seen[id] = true
					st.ids.add(id)
				}
			}
			log.Debug("object read", "object", store.Where(o.key), "records", len(recs))
		}
		out[w] = st
	}
	return out, nil
}

func readObject(ctx context.Context, r objectio.Reader, key string, f encode.Format) ([]encode.Record, error) {
	body, err := r.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return encode.ReadObject(body, f)
}
