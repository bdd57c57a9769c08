package objectio

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/outflow/outflow/internal/oplog"
	"github.com/outflow/outflow/transforms/encode"
)

// An integration's prefix holds the union of what every run into it read, each
// impression once (CONTRACT §4), whatever those runs were: backfills over other
// files, ranges, shard counts, a stream before or after. So no object is ever
// replaced: before a chunk is stored, the data objects already in its window that
// meet its time range are listed, and what they hold is left out; what is left, if
// anything, goes into an object named by the digest of its impressions. A rerun of
// the same input finds an object of its chunk's very name and stores nothing.
//
// Objects of the prefix always lie within one window of the integration: the
// launcher refuses to run beside objects that do not (Conflicts), so the objects
// that meet a window start within it, and are found by listing its partitions.

// window is the bounds of an element's window.
type window struct{ start, end time.Time }

// maxEarlier bounds how many objects' ids, and partitions' listings, a writer keeps
// (an object is immutable under its name, so what it holds is read once).
const maxEarlier = 1024

// held finds what the data objects already under a prefix hold. Its methods may be
// called from several uploads at once.
type held struct {
	// keep says listings are kept for the life of the writer: true in a batch job,
	// whose chunks never meet another chunk of the job in the store (one per key,
	// window and shard, and the backfill cuts its jobs on window boundaries). It
	// lists whole days then, each once, as a LIST costs more than the keys it
	// returns. A stream lists a pane's hours afresh: its own earlier panes are found
	// so.
	keep bool

	listed memo[[]object]    // partition -> the data objects under it (when keep)
	ids    memo[[]uuid.UUID] // object key -> the ids it holds

	mu     sync.Mutex
	warned map[string]bool // integrations whose store cannot be listed, warned of
}

// overlapping returns the keys of the data objects under d's prefix, of any
// integration, shard or pane, whose time range meets [start, end), part of the
// window w. A store that may not be listed is warned of once and taken as holding
// none.
func (h *held) overlapping(ctx context.Context, d *dest, w window, start, end time.Time) ([]string, error) {
	if d.reader == nil {
		h.warn(ctx, d, cannotList, d.Spec.Prefix)
		return nil, nil
	}
	var out []string
	for _, part := range d.Spec.Partitions(w.start, w.end, h.keep) {
		objects, err := h.list(ctx, d, part)
		if errors.Is(err, ErrDenied) {
			h.warn(ctx, d, cannotList, part)
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		for _, o := range objects {
			if o.name.Start.Before(end) && o.name.End.After(start) {
				out = append(out, o.key)
			}
		}
	}
	return out, nil
}

// object is a data object found in a listing.
type object struct {
	key  string
	name encode.ObjectName
}

// list lists the data objects of a partition, or returns the listing kept.
func (h *held) list(ctx context.Context, d *dest, part string) ([]object, error) {
	list := func() ([]object, error) {
		keys, err := d.reader.List(ctx, part)
		if err != nil {
			return nil, fmt.Errorf("objectio: list %s: %w", d.store.Where(part), err)
		}
		prefix := ""
		if d.Spec.Prefix != "" {
			prefix = d.Spec.Prefix + "/"
		}
		var out []object
		for _, key := range keys {
			if n, ok := d.Spec.ParseKey(strings.TrimPrefix(key, prefix)); ok {
				out = append(out, object{key, n})
			}
		}
		return out, nil
	}
	if !h.keep {
		return list()
	}
	return h.listed.get(part, list)
}

// warn says once per integration that its store refuses what, at where.
func (h *held) warn(ctx context.Context, d *dest, what, where string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.warned[d.ID+what] {
		return
	}
	if h.warned == nil {
		h.warned = map[string]bool{}
	}
	h.warned[d.ID+what] = true
	oplog.L().WarnContext(ctx, "objectio: "+what+": impressions that objects of earlier runs "+
		"hold may be stored again in a second object", "integration", d.ID, "where", d.store.Where(where))
}

// What warn says a store refuses.
const (
	cannotList = "the store cannot be listed"
	cannotRead = "objects already stored cannot be read back (no permission, or no key to decrypt them)"
)

// holding returns the ids that the objects at keys hold, among want.
func (h *held) holding(ctx context.Context, d *dest, keys []string, want []uuid.UUID) (map[uuid.UUID]bool, error) {
	wanted := make(map[uuid.UUID]bool, len(want))
	for _, id := range want {
		wanted[id] = true
	}
	out := map[uuid.UUID]bool{}
	for _, key := range keys {
		ids, err := h.read(ctx, d, key)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			if wanted[id] {
				out[id] = true
			}
		}
	}
	return out, nil
}

// read returns the ids of the impressions the object at key holds.
func (h *held) read(ctx context.Context, d *dest, key string) ([]uuid.UUID, error) {
	return h.ids.get(key, func() ([]uuid.UUID, error) {
		body, err := d.reader.Get(ctx, key)
		if errors.Is(err, ErrDenied) {
			// Credentials that may list but not read would otherwise fail every run
			// (and a stream every restart) on the first object they find.
			h.warn(ctx, d, cannotRead, key)
			return nil, nil
		}
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
		return ids, nil
	})
}

// memo computes a value once per key for all who ask, at once or later, and keeps at
// most maxEarlier. A failure is not kept: the next to ask tries again.
type memo[T any] struct {
	mu sync.Mutex
	m  map[string]*memoEntry[T]
}

type memoEntry[T any] struct {
	once sync.Once
	v    T
	err  error
}

func (m *memo[T]) get(key string, f func() (T, error)) (T, error) {
	m.mu.Lock()
	e := m.m[key]
	if e == nil {
		if m.m == nil || len(m.m) >= maxEarlier {
			m.m = map[string]*memoEntry[T]{}
		}
		e = &memoEntry[T]{}
		m.m[key] = e
	}
	m.mu.Unlock()
	e.once.Do(func() { e.v, e.err = f() })
	if e.err != nil {
		m.mu.Lock()
		if m.m[key] == e {
			delete(m.m, key)
		}
		m.mu.Unlock()
	}
	return e.v, e.err
}
