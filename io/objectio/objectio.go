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
	// Live is a stream's: it writes a window again for its late data, so each
	// object is named by its impressions too (ObjectSpec.Key); an impression that
	// another object of the window holds already, written by an earlier run of the
	// job, is not written again (stored.go); and the copies an object took are
	// reported finished (package ack) once it is stored.
	Live bool `json:"live,omitempty"`
	// Since and Until (Unix ms, 0: open) are a backfill's --since/--until. A window
	// they cut is named by the part of it the run covers, so the runs on either side
	// of a cut write different objects rather than one replacing the other.
	Since int64 `json:"since,omitempty"`
	Until int64 `json:"until,omitempty"`
	// Window and Shards are the integration's: which objects a run writes.
	Window time.Duration `json:"window"`
	Shards int           `json:"shards"`
	// SizedShards says the backfill sized Shards by its input (the integration
	// left them out), so an earlier run's input may have sized them otherwise.
	SizedShards bool `json:"sized_shards,omitempty"`
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

// Write stores each chunk as the data object of its integration, window and shard
// (CONTRACT §4). Uploads run concurrently, at most Spec.MaxConcurrentUploads per
// integration, and all finish before the bundle does. A Live target's chunks are
// stored one at a time, and marks (package ack) report their copies finished.
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

	earlier earlierObjects // what objects of earlier runs hold, for Live targets
}

// dest is one integration's store, upload slots and metrics.
type dest struct {
	Target
	store  Store
	reader Reader // nil: the store cannot be read back (Live targets then warn once)
	slots  chan struct{}

	impressions, duplicates, delivered, objects, bytes metricname.Counter
}

// stored is a finished upload. Beam metrics are only touched on the bundle's goroutine.
type stored struct {
	d   *dest
	obj *encode.Object
}

func (fn *writeFn) Setup(ctx context.Context) error {
	fn.dests = map[string]*dest{}
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
			objects:     metricname.NewCounter(t.ID, metricname.Objects),
			bytes:       metricname.NewCounter(t.ID, metricname.Bytes),
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
	start, end := d.Covered(iw.Start.ToTime(), iw.End.ToTime())
	if d.Live {
		return fn.writeLive(ctx, d, start, end, shard, c, marks)
	}
	objKey := d.Spec.Key(id, start, end, shard, "")
	obj, err := encode.FinishObject(c, d.Spec.Format)
	if err != nil {
		return fmt.Errorf("objectio: %s: %w", d.store.Where(objKey), err)
	}
	d.impressions.Inc(ctx, int64(obj.Records))
	d.duplicates.Inc(ctx, int64(obj.Duplicates))
	// Never wait here for uploads: a bundle that makes no progress for a moment is
	// split by prism, again and again, copying what is left of it each time.
	fn.uploads.Go(func() error {
		if err := fn.put(fn.ctx, d, objKey, obj); err != nil {
			return err
		}
		fn.mu.Lock()
		fn.stored = append(fn.stored, stored{d, obj})
		fn.mu.Unlock()
		return nil
	})
	return nil
}

// writeLive stores a stream's pane as an object of its own, without what objects
// of earlier runs hold already, and reports its copies finished. A stream's panes
// are small and seldom, so it waits for the upload: its marks must be the output of
// the element that stored it.
func (fn *writeFn) writeLive(ctx context.Context, d *dest, start, end time.Time, shard int, c encode.Chunk, marks func(int32, []byte)) error {
	var t ack.Tally
	t.Done(c.Origins()...)
	c, dropped, err := fn.earlier.drop(ctx, d, start, end, shard, c)
	if err != nil {
		return err
	}
	d.duplicates.Inc(ctx, int64(dropped))
	if c.N > 0 {
		objKey := d.Spec.Key(d.ID, start, end, shard, c.Digest())
		obj, err := encode.FinishObject(c, d.Spec.Format)
		if err != nil {
			return fmt.Errorf("objectio: %s: %w", d.store.Where(objKey), err)
		}
		if err := fn.put(ctx, d, objKey, obj); err != nil {
			return err
		}
		d.impressions.Inc(ctx, int64(obj.Records))
		d.duplicates.Inc(ctx, int64(obj.Duplicates))
		d.count(ctx, obj)
	}
	t.Emit(marks)
	return nil
}

// put uploads obj as key, in one of d's upload slots.
func (fn *writeFn) put(ctx context.Context, d *dest, key string, obj *encode.Object) error {
	select {
	case d.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-d.slots }()
	body := obj.Open()
	defer body.Close()
	if err := d.store.Put(ctx, key, d.Spec.Format.ContentType(), body); err != nil {
		return fmt.Errorf("put %s: %w", d.store.Where(key), err)
	}
	return nil
}

// count counts a stored object.
func (d *dest) count(ctx context.Context, obj *encode.Object) {
	d.delivered.Inc(ctx, int64(obj.Records))
	progress.Add(progress.DoneKey(d.Progress, d.ID), int64(obj.Records))
	d.objects.Inc(ctx, 1)
	d.bytes.Inc(ctx, obj.Bytes())
}

// FinishBundle waits for the bundle's uploads: a bundle is done only when its
// objects are stored.
func (fn *writeFn) FinishBundle(ctx context.Context, _ func(int32, []byte)) error {
	defer fn.cancel()
	err := fn.uploads.Wait()
	for _, st := range fn.stored {
		st.d.count(ctx, st.obj)
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
