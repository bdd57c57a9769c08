package objectio

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/outflow/outflow/internal/oplog"
	"github.com/outflow/outflow/transforms/encode"
)

// A stream that is restarted reads again the records it had not committed, and some
// of their impressions may be in objects already: their windows were stored while
// another integration still held the records back. The new run forms its panes
// afresh, so their objects get other names; written as they are, those impressions
// would be in two objects (CONTRACT §4). Before a Live pane is stored, the other
// objects of its window and shard are listed, and what they hold is left out.
//
// Within one run, encode.DropSeen has already left out what earlier panes took, so
// the objects found are mostly none (one LIST per pane), or the run's own late panes.

// maxEarlier bounds how many objects' ids a worker keeps (an object is immutable
// under its name, so what it holds is read once).
const maxEarlier = 1024

// earlierObjects reads and keeps what the objects of a window hold.
type earlierObjects struct {
	ids    map[string][]uuid.UUID // by object key
	warned map[string]bool        // integrations whose store cannot be listed, warned of
}

// drop returns c without the impressions that the other data objects of d's window
// [start, end) and shard hold, and how many it left out.
func (e *earlierObjects) drop(ctx context.Context, d *dest, start, end time.Time, shard int, c encode.Chunk) (encode.Chunk, int, error) {
	keys, err := e.list(ctx, d, start, end, shard)
	if err != nil || len(keys) == 0 {
		return c, 0, err
	}
	held := map[uuid.UUID]bool{}
	for _, key := range keys {
		ids, err := e.read(ctx, d, key)
		if err != nil {
			return c, 0, err
		}
		for _, id := range ids {
			held[id] = true
		}
	}
	kept, dropped, err := c.Without(held)
	if err != nil {
		return c, 0, fmt.Errorf("objectio: %s: %w", d.ID, err)
	}
	return kept, len(dropped), nil
}

// list returns the keys of the data objects of d's window and shard. A store that
// may not be listed is warned of once and taken as holding none.
func (e *earlierObjects) list(ctx context.Context, d *dest, start, end time.Time, shard int) ([]string, error) {
	var err error = ErrDenied
	var keys []string
	base := strings.TrimSuffix(d.Spec.Key(d.ID, start, end, shard, ""), d.Spec.Format.Ext())
	if d.reader != nil {
		keys, err = d.reader.List(ctx, base)
	}
	if errors.Is(err, ErrDenied) {
		if e.warned == nil {
			e.warned = map[string]bool{}
		}
		if !e.warned[d.ID] {
			e.warned[d.ID] = true
			oplog.L().WarnContext(ctx, "objectio: the store cannot be listed: after a restart of the stream, "+
				"impressions stored just before it may be stored again in a second object",
				"integration", d.ID, "where", d.store.Where(base))
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("objectio: list %s: %w", d.store.Where(base), err)
	}
	prefix := ""
	if d.Spec.Prefix != "" {
		prefix = d.Spec.Prefix + "/"
	}
	var out []string
	for _, key := range keys {
		n, ok := d.Spec.ParseKey(strings.TrimPrefix(key, prefix))
		if ok && n.Integration == d.ID && n.Shard == shard && n.Start.Equal(start) && n.End.Equal(end) {
			out = append(out, key)
		}
	}
	return out, nil
}

// read returns the ids of the impressions the object at key holds.
func (e *earlierObjects) read(ctx context.Context, d *dest, key string) ([]uuid.UUID, error) {
	if ids, ok := e.ids[key]; ok {
		return ids, nil
	}
	body, err := d.reader.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("objectio: read %s back: %w", d.store.Where(key), err)
	}
	defer body.Close()
	recs, err := encode.ReadObject(body, d.Spec.Format)
	if err != nil {
		return nil, fmt.Errorf("objectio: read %s back: %w", d.store.Where(key), err)
	}
	ids := make([]uuid.UUID, len(recs))
	for i := range recs {
		imp := recs[i].Impression(d.Tenant)
		ids[i] = imp.ComputeID()
	}
	if e.ids == nil || len(e.ids) >= maxEarlier {
		e.ids = map[string][]uuid.UUID{}
	}
	e.ids[key] = ids
	return ids, nil
}
