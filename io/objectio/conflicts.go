package objectio

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/outflow/outflow/transforms/encode"
)

// Conflict is a data object already in a store that a run cannot write beside:
// its impressions could not be left out of the run's objects (stored.go), or the
// prefix would mix formats.
type Conflict struct {
	Object string // where it is: s3://bucket/key
	Why    string
}

// Conflicts lists the data objects under t's prefix, of any integration id, within
// t's run range, that t cannot write beside: objects of another format, and objects
// that do not lie within one window of t's (an earlier run's larger window). Every
// other earlier object is fine: other shard counts, ranges cut by --since/--until, a
// stream's panes, an integration's earlier id; a run leaves out what they hold.
func Conflicts(ctx context.Context, t Target) ([]Conflict, error) {
	store, err := NewStore(ctx, t.Kind, t.Settings)
	if err != nil {
		return nil, fmt.Errorf("integration %q: %w", t.ID, err)
	}
	reader, ok := store.(Reader)
	if !ok {
		return nil, fmt.Errorf("integration %q: the %s store cannot be listed: %w", t.ID, t.Kind, ErrDenied)
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
	for _, key := range keys {
		n, ok := encode.ParseKey(strings.TrimPrefix(key, prefix))
		if !ok || !t.overlaps(n.Start, n.End) {
			continue
		}
		if why := t.cannotWriteBeside(n); why != "" {
			out = append(out, Conflict{Object: store.Where(key), Why: why})
		}
	}
	return out, nil
}

// overlaps reports whether [start, end) meets the run's range.
func (t *Target) overlaps(start, end time.Time) bool {
	return (t.Until == 0 || start.UnixMilli() < t.Until) && (t.Since == 0 || end.UnixMilli() > t.Since)
}

// cannotWriteBeside says why the run cannot write beside an object of name n, or "".
func (t *Target) cannotWriteBeside(n encode.ObjectName) string {
	const stamp = "2006-01-02T15:04:05Z"
	switch {
	case n.Ext != t.Spec.Format.Ext():
		return fmt.Sprintf("holds %s objects; this run writes %s: set format back, or write to another prefix",
			n.Ext, t.Spec.Format.Ext())
	case !encode.WindowStart(n.Start, t.Window).Equal(encode.WindowStart(n.End.Add(-time.Millisecond), t.Window)):
		return fmt.Sprintf("holds %s to %s, across windows of %v, whose objects would not find it: "+
			"set window to the earlier run's, or write to another prefix", n.Start.Format(stamp), n.End.Format(stamp), t.Window)
	}
	return ""
}
