package objectio

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/outflow/outflow/transforms/encode"
)

// Conflict is a data object already in a store that a run cannot overwrite: writing
// the run's own objects beside it would put some impressions in two objects
// (CONTRACT §4: every routed impression is in exactly one data object, whatever the
// windows and ranges of this and earlier runs).
type Conflict struct {
	Object string // where it is: s3://bucket/key
	Why    string
}

// Conflicts lists the objects under t's prefix, of t's integration and within t's
// run range, whose names the run would not write again: another window size or
// range (an earlier run's --since/--until cut the window elsewhere), another format
// or shard count, or a stream's per-pane objects. An object of the same name is
// overwritten with the same impressions, so it is no conflict.
func Conflicts(ctx context.Context, t Target) ([]Conflict, error) {
	store, err := NewStore(ctx, t.Kind, t.Settings)
	if err != nil {
		return nil, fmt.Errorf("integration %q: %w", t.ID, err)
	}
	reader, ok := store.(Reader)
	if !ok {
		return nil, fmt.Errorf("integration %q: the %s store cannot be listed", t.ID, t.Kind)
	}
	prefix := t.Spec.Prefix
	if prefix != "" {
		prefix += "/"
	}
	keys, err := reader.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("integration %q: list %s: %w", t.ID, store.Where(prefix), err)
	}
	var out []Conflict
	most, mostKey := -1, "" // the highest shard of the earlier objects, and one such object
	for _, key := range keys {
		n, ok := encode.ParseKey(strings.TrimPrefix(key, prefix))
		if !ok || n.Integration != t.ID || !t.overlaps(n.Start, n.End) {
			continue
		}
		if why := t.wouldNotWrite(n); why != "" {
			out = append(out, Conflict{Object: store.Where(key), Why: why})
		} else if n.Shard > most {
			most, mostKey = n.Shard, key
		}
	}
	// Shards sized by data that grew since an earlier run: each impression moves to
	// another shard, and in a window too sparse to fill every new shard an earlier
	// object is not overwritten. (Fewer shards are refused above, object by object.)
	if t.SizedShards && most >= 0 && most+1 < t.Shards {
		out = append(out, Conflict{Object: store.Where(mostKey), Why: fmt.Sprintf("an earlier run wrote %d objects a window; "+
			"this run, sizing them by its input, writes %d: set shards: %d to write as it did", most+1, t.Shards, most+1)})
	}
	return out, nil
}

// overlaps reports whether [start, end) meets the run's range.
func (t *Target) overlaps(start, end time.Time) bool {
	return (t.Until == 0 || start.UnixMilli() < t.Until) && (t.Since == 0 || end.UnixMilli() > t.Since)
}

// wouldNotWrite says why the run would not write an object of name n, or "".
func (t *Target) wouldNotWrite(n encode.ObjectName) string {
	const stamp = "2006-01-02T15:04:05Z"
	ws := encode.WindowStart(n.Start, t.Window)
	start, end := t.Covered(ws, ws.Add(t.Window))
	switch {
	case n.Pane != "":
		return "written by a stream (one object per pane); a backfill would hold its impressions twice"
	case n.Ext != t.Spec.Format.Ext():
		return fmt.Sprintf("holds %s objects; this run writes %s", n.Ext, t.Spec.Format.Ext())
	case n.Shard >= t.Shards && t.SizedShards:
		return fmt.Sprintf("is shard %d; this run, sizing objects by its input, writes %d a window: "+
			"set shards to the earlier run's to write as it did", n.Shard, t.Shards)
	case n.Shard >= t.Shards:
		return fmt.Sprintf("is shard %d; this run writes %d shards a window", n.Shard, t.Shards)
	case !n.Start.Equal(start) || !n.End.Equal(end):
		return fmt.Sprintf("holds %s to %s; this run (window %v) writes %s to %s", n.Start.Format(stamp),
			n.End.Format(stamp), t.Window, start.Format(stamp), end.Format(stamp))
	}
	return ""
}
