package s3io

import (
	"context"
	"fmt"
	"sync"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	beamwindow "github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sync/errgroup"

	"github.com/outflow/outflow/internal/metricname"
	"github.com/outflow/outflow/transforms/encode"
	"github.com/outflow/outflow/transforms/route"
)

func init() {
	register.DoFn4x1[context.Context, beam.Window, string, encode.Chunk, error](&writeFn{})
}

// Write stores each chunk as the data object of its integration, window and shard
// (CONTRACT §4). Uploads run concurrently, at most MaxConcurrentUploads per
// integration, and all finish before the bundle does.
//
// In: PCollection<KV<string, encode.Chunk>> keyed by route.Key, from encode.Objects.
func Write(s beam.Scope, integrations map[string]Config, chunks beam.PCollection) {
	s = s.Scope("s3io.Write")
	beam.ParDo0(s, &writeFn{Integrations: integrations}, chunks)
}

type writeFn struct {
	Integrations map[string]Config `json:"integrations"`

	dests   map[string]*dest
	uploads *errgroup.Group
	ctx     context.Context // the uploads' context, cancelled when the bundle ends
	cancel  context.CancelFunc

	mu     sync.Mutex
	stored []stored // uploads done in this bundle, counted in FinishBundle
}

// stored is a finished upload. Beam metrics are only touched on the bundle's goroutine.
type stored struct {
	d    *dest
	data encode.Data
}

// dest is one integration's client, upload slots and metrics.
type dest struct {
	cfg      Config
	uploader *manager.Uploader
	slots    chan struct{}
	header   []byte

	impressions, duplicates, delivered, objects, bytes beam.Counter
}

func (fn *writeFn) Setup(ctx context.Context) error {
	fn.dests = map[string]*dest{}
	for id, cfg := range fn.Integrations {
		client, err := NewClient(ctx, cfg)
		if err != nil {
			return fmt.Errorf("integration %q: %w", id, err)
		}
		fn.dests[id] = &dest{
			cfg: cfg,
			uploader: manager.NewUploader(client, func(u *manager.Uploader) {
				u.PartSize = 8 << 20
				u.Concurrency = 2
			}),
			slots:       make(chan struct{}, cfg.MaxConcurrentUploads),
			header:      encode.NewEncoder(cfg.Format).Header(),
			impressions: beam.NewCounter(id, metricname.Impressions),
			duplicates:  beam.NewCounter(id, metricname.Duplicates),
			delivered:   beam.NewCounter(id, metricname.Delivered),
			objects:     beam.NewCounter(id, metricname.Objects),
			bytes:       beam.NewCounter(id, metricname.Bytes),
		}
	}
	return nil
}

func (fn *writeFn) StartBundle(ctx context.Context) {
	fn.ctx, fn.cancel = context.WithCancel(ctx)
	fn.uploads, fn.ctx = errgroup.WithContext(fn.ctx)
}

func (fn *writeFn) ProcessElement(ctx context.Context, w beam.Window, key string, c encode.Chunk) error {
	id, shard := route.SplitKey(key)
	d, ok := fn.dests[id]
	if !ok {
		return fmt.Errorf("s3io: no configuration for integration %q", id)
	}
	iw := w.(beamwindow.IntervalWindow)
	objKey := d.cfg.Key(id, iw.Start.ToTime(), iw.End.ToTime(), shard)
	data, err := c.Finish(d.header)
	if err != nil {
		return fmt.Errorf("s3io: %s: %w", objKey, err)
	}
	d.impressions.Inc(ctx, int64(data.Records))
	d.duplicates.Inc(ctx, int64(data.Duplicates))
	fn.uploads.Go(func() error {
		select {
		case d.slots <- struct{}{}:
		case <-fn.ctx.Done():
			return fn.ctx.Err()
		}
		defer func() { <-d.slots }()
		_, err := d.uploader.Upload(fn.ctx, &s3.PutObjectInput{
			Bucket:      aws.String(d.cfg.Bucket),
			Key:         aws.String(objKey),
			Body:        data.Reader(),
			ContentType: aws.String("application/gzip"),
		})
		if err != nil {
			return fmt.Errorf("s3io: put s3://%s/%s: %w", d.cfg.Bucket, objKey, err)
		}
		fn.mu.Lock()
		fn.stored = append(fn.stored, stored{d, encode.Data{Records: data.Records, Bytes: data.Bytes}})
		fn.mu.Unlock()
		return nil
	})
	return nil
}

// FinishBundle waits for the bundle's uploads: a bundle is done only when its
// objects are stored.
func (fn *writeFn) FinishBundle(ctx context.Context) error {
	defer fn.cancel()
	err := fn.uploads.Wait()
	for _, st := range fn.stored {
		st.d.delivered.Inc(ctx, int64(st.data.Records))
		st.d.objects.Inc(ctx, 1)
		st.d.bytes.Inc(ctx, st.data.Bytes)
	}
	fn.stored = nil
	return err
}
