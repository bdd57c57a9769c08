// Package objectio is the object-store core shared by the S3 and GCS sinks: it names
// each (integration, window, shard) chunk's object, finishes it (one copy of each
// impression, the format's header) and uploads it, several at once. A store package
// holds only its client and upload.
package objectio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	beamwindow "github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"golang.org/x/sync/errgroup"

	"github.com/outflow/outflow/internal/ack"
	"github.com/outflow/outflow/internal/metricname"
	"github.com/outflow/outflow/internal/progress"
	"github.com/outflow/outflow/internal/registry"
	"github.com/outflow/outflow/transforms/encode"
	"github.com/outflow/outflow/transforms/route"
)

func init() {
	register.DoFn5x1[context.Context, beam.Window, string, encode.Chunk, func(int32, []byte), error](&writeFn{})
	register.Emitter2[int32, []byte]()
}

// Store uploads objects to one bucket.
type Store interface {
	// Put stores the object at key, reading body to its end.
	Put(ctx context.Context, key, contentType string, body io.Reader) error
	// Where names an object for messages: s3://bucket/key, gs://bucket/key.
	Where(key string) string
}

// Factory builds a store from its configuration section, as JSON.
type Factory func(ctx context.Context, settings json.RawMessage) (Store, error)

var kinds = registry.New[Factory]("store")

// Register makes a store kind available to Write; store packages call it from init.
func Register(kind string, f Factory) { kinds.Register(kind, f) }

// NewStore builds a registered store from its settings.
func NewStore(ctx context.Context, kind string, settings json.RawMessage) (Store, error) {
	f, err := kinds.Get(kind)
	if err != nil {
		return nil, fmt.Errorf("objectio: %w", err)
	}
	return f(ctx, settings)
}

// Target is one object store integration as the core sees it.
type Target struct {
	ID   string            `json:"id"`
	Kind string            `json:"kind"`
	Spec encode.ObjectSpec `json:"spec"`
	// Settings is the store's own configuration section, as JSON.
	Settings json.RawMessage `json:"settings"`
	// Progress is the job counting what this integration stored (package progress).
	Progress string `json:"progress,omitempty"`
	// Tenant is the integration's: the ids of what its objects hold are computed
	// with it (encode.Record.Impression).
	Tenant string `json:"tenant"`
	// Live is a stream's: its panes are stored one at a time, and the copies an
	// object took are reported finished (package ack) once it is stored.
	Live bool `json:"live,omitempty"`
	// Since and Until (Unix ms, 0: open) are a backfill's --since/--until. A window
	// they cut is named by the part of it the run covers, so the runs on either side
	// of a cut write different objects rather than one replacing the other.
	Since int64 `json:"since,omitempty"`
	Until int64 `json:"until,omitempty"`
	// Window is the integration's: the objects of its prefix each lie within one.
	Window time.Duration `json:"window"`
}

// Covered is the part of the window [start, end) that t's run writes.
func (t *Target) Covered(start, end time.Time) (time.Time, time.Time) {
	if t.Since != 0 && start.UnixMilli() < t.Since {
		start = time.UnixMilli(t.Since).UTC()
	}
	if t.Until != 0 && end.UnixMilli() > t.Until {
		end = time.UnixMilli(t.Until).UTC()
	}
	return start, end
}

// Write stores each chunk as a data object of its integration, window and shard
// (CONTRACT §4), without what objects already in the prefix hold (stored.go), and
// named by the digest of what it holds. Uploads run concurrently, at most
// Spec.MaxConcurrentUploads per integration, and all finish before the bundle does.
// A Live target's chunks are stored one at a time, and marks (package ack) report
// their copies finished.
//
// In: PCollection<KV<string, encode.Chunk>> keyed by route.Key, from encode.Objects.
// Out: marks, PCollection<KV<int32, []byte>>.
func Write(s beam.Scope, targets []Target, chunks beam.PCollection) (marks beam.PCollection) {
	s = s.Scope("objectio.Write")
	return beam.ParDo(s, &writeFn{Targets: targets}, chunks)
}

type writeFn struct {
	Targets []Target `json:"targets"`

	dests   map[string]*dest
	uploads *errgroup.Group
	ctx     context.Context // the uploads' context, cancelled when the bundle ends
	cancel  context.CancelFunc

	mu     sync.Mutex
	stored []stored // uploads done in this bundle, counted in FinishBundle

	held *held // what the objects already in the prefixes hold
}

// dest is one integration's store, upload slots and metrics.
type dest struct {
	Target
	store  Store
	reader Reader // nil: the store cannot be read back (Live targets then warn once)
	slots  chan struct{}

	impressions, duplicates, delivered, before, objects, bytes metricname.Counter
}

// stored is what storing one chunk did. Beam metrics are only touched on the
// bundle's goroutine.
type stored struct {
	d *dest
	// unique impressions in the chunk, and copies of them dropped
	impressions, duplicates int
	// of the impressions, those that objects already in the prefix held
	before int
	obj    *encode.Object // the object written, or nil
}

func (fn *writeFn) Setup(ctx context.Context) error {
	fn.dests = map[string]*dest{}
	fn.held = &held{keep: true}
	for _, t := range fn.Targets {
		store, err := NewStore(ctx, t.Kind, t.Settings)
		if err != nil {
			return fmt.Errorf("integration %q: %w", t.ID, err)
		}
		reader, _ := store.(Reader)
		fn.dests[t.ID] = &dest{
			Target:      t,
			store:       store,
			reader:      reader,
			slots:       make(chan struct{}, max(1, t.Spec.MaxConcurrentUploads)),
			impressions: metricname.NewCounter(t.ID, metricname.Impressions),
			duplicates:  metricname.NewCounter(t.ID, metricname.Duplicates),
			delivered:   metricname.NewCounter(t.ID, metricname.Delivered),
			before:      metricname.NewCounter(t.ID, metricname.StoredBefore),
			objects:     metricname.NewCounter(t.ID, metricname.Objects),
			bytes:       metricname.NewCounter(t.ID, metricname.Bytes),
		}
		if t.Live {
			fn.held.keep = false
		}
	}
	return nil
}

// StartBundle and FinishBundle take ProcessElement's emitter, as Beam requires;
// they emit nothing.
func (fn *writeFn) StartBundle(ctx context.Context, _ func(int32, []byte)) {
	fn.ctx, fn.cancel = context.WithCancel(ctx)
	fn.uploads, fn.ctx = errgroup.WithContext(fn.ctx)
}

func (fn *writeFn) ProcessElement(ctx context.Context, w beam.Window, key string, c encode.Chunk, marks func(int32, []byte)) error {
	id, shard := route.SplitKey(key)
	d, ok := fn.dests[id]
	if !ok {
		return fmt.Errorf("objectio: no target for integration %q", id)
	}
	iw := w.(beamwindow.IntervalWindow)
	win := window{iw.Start.ToTime(), iw.End.ToTime()}
	start, end := d.Covered(win.start, win.end)
	if d.Live {
		// A stream's panes are small and seldom, so it waits for the upload: its
		// marks must be the output of the element that stored it.
		var t ack.Tally
		t.Done(c.Origins()...)
		st, err := fn.store(ctx, d, win, start, end, shard, c)
		if err != nil {
			return err
		}
		st.count(ctx)
		t.Emit(marks)
		return nil
	}
	// Never wait here for uploads: a bundle that makes no progress for a moment is
	// split by prism, again and again, copying what is left of it each time.
	fn.uploads.Go(func() error {
		st, err := fn.store(fn.ctx, d, win, start, end, shard, c)
		if err != nil {
			return err
		}
		fn.mu.Lock()
		fn.stored = append(fn.stored, st)
		fn.mu.Unlock()
		return nil
	})
	return nil
}

// store stores chunk c of window w's part [start, end) and shard, without the
// impressions that objects already in d's prefix hold, in one of d's upload slots:
// listing and reading back count as uploads.
func (fn *writeFn) store(ctx context.Context, d *dest, w window, start, end time.Time, shard int, c encode.Chunk) (stored, error) {
	select {
	case d.slots <- struct{}{}:
	case <-ctx.Done():
		return stored{}, ctx.Err()
	}
	defer func() { <-d.slots }()
	obj, err := encode.FinishObject(c, d.Spec.Format)
	if err != nil {
		return stored{}, fmt.Errorf("objectio: %s: %w", d.ID, err)
	}
	st := stored{d: d, impressions: obj.Records, duplicates: obj.Duplicates}
	earlier, err := fn.held.overlapping(ctx, d, w, start, end)
	if err != nil {
		return st, err
	}
	if slices.Contains(earlier, d.Spec.Key(d.ID, start, end, shard, obj.Digest)) {
		st.before = obj.Records // stored by an earlier run of the same input
		return st, nil
	}
	if len(earlier) > 0 {
		had, err := fn.held.holding(ctx, d, earlier, obj.IDs)
		if err != nil {
			return st, err
		}
		if st.before = len(had); st.before == obj.Records {
			return st, nil
		}
		if st.before > 0 {
			if c, _, err = c.Without(had); err == nil {
				obj, err = encode.FinishObject(c, d.Spec.Format)
			}
			if err != nil {
				return st, fmt.Errorf("objectio: %s: %w", d.ID, err)
			}
		}
	}
	key := d.Spec.Key(d.ID, start, end, shard, obj.Digest)
	if err := fn.put(ctx, d, key, obj); err != nil {
		return st, err
	}
	st.obj = obj
	return st, nil
}

// put uploads obj as key.
func (fn *writeFn) put(ctx context.Context, d *dest, key string, obj *encode.Object) error {
	body := obj.Open()
	defer body.Close()
	if err := d.store.Put(ctx, key, d.Spec.Format.ContentType(), body); err != nil {
		return fmt.Errorf("put %s: %w", d.store.Where(key), err)
	}
	return nil
}

// count counts what storing a chunk did: its impressions are delivered, whether
// this object or an earlier one holds them.
func (st stored) count(ctx context.Context) {
	d := st.d
	d.impressions.Inc(ctx, int64(st.impressions))
	d.duplicates.Inc(ctx, int64(st.duplicates))
	d.delivered.Inc(ctx, int64(st.impressions))
	d.before.Inc(ctx, int64(st.before))
	progress.Add(progress.DoneKey(d.Progress, d.ID), int64(st.impressions))
	if st.obj != nil {
		d.objects.Inc(ctx, 1)
		d.bytes.Inc(ctx, st.obj.Bytes())
	}
}

// FinishBundle waits for the bundle's uploads: a bundle is done only when its
// objects are stored.
func (fn *writeFn) FinishBundle(ctx context.Context, _ func(int32, []byte)) error {
	defer fn.cancel()
	err := fn.uploads.Wait()
	for _, st := range fn.stored {
		st.count(ctx)
	}
	fn.stored = nil
	return err
}

// ErrDenied is a store refusing a read or a listing to these credentials.
var ErrDenied = errors.New("access denied")

// Reader reads a store back, for checking what it holds (pipelines/verify).
type Reader interface {
	// List returns the keys of the objects under prefix. An error because the
	// credentials may not list (write-only, as export buckets often are) wraps
	// ErrDenied.
	List(ctx context.Context, prefix string) ([]string, error)
	// Get opens an object.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
}
