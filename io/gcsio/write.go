package gcsio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/storage"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/outflow/outflow/io/objectio"
)

// Kind names GCS integrations in object-store targets and configuration.
const Kind = "gcs"

func init() { objectio.Register(Kind, newStore) }

// chunkSize is how much of an object goes up per request. A smaller object goes up
// in one request; a larger one as a resumable upload, chunk by chunk, each chunk
// buffered (and retried) on its own.
const chunkSize = 8 << 20

// NewClient returns a GCS client for cfg: credentials from Application Default
// Credentials; with an endpoint, or with STORAGE_EMULATOR_HOST set, an
// unauthenticated client of that server. Reads use the JSON API, which emulators
// serve (fake-gcs-server serves the XML API only on its public host).
//
// Transient errors are retried with backoff, uploads included: object names are
// deterministic, so repeating an upload rewrites the same object.
func NewClient(ctx context.Context, cfg Config) (*storage.Client, error) {
	opts := []option.ClientOption{storage.WithJSONReads()}
	if cfg.Endpoint != "" {
		ep, err := apiEndpoint(cfg.Endpoint)
		if err != nil {
			return nil, err
		}
		opts = append(opts, option.WithEndpoint(ep), option.WithoutAuthentication())
	}
	client, err := storage.NewClient(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("gcsio: new client: %w", err)
	}
	client.SetRetry(
		storage.WithPolicy(storage.RetryAlways),
		storage.WithMaxAttempts(6),
		storage.WithBackoff(gax.Backoff{Initial: time.Second, Max: 20 * time.Second, Multiplier: 2}),
	)
	return client, nil
}

// apiEndpoint returns the JSON API URL of a server: the endpoint as given if it has a
// path, else its /storage/v1/.
func apiEndpoint(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "", fmt.Errorf("gcsio: endpoint %q is not an http(s) URL", redact(endpoint))
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/storage/v1/"
	} else if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	return u.String(), nil
}

// redact drops any user information from an endpoint, for messages.
func redact(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "(unparseable URL)"
	}
	u.User = nil
	return u.String()
}

// store uploads to one GCS bucket.
type store struct {
	bucket string
	handle *storage.BucketHandle
}

func newStore(ctx context.Context, settings json.RawMessage) (objectio.Store, error) {
	var cfg Config
	if err := json.Unmarshal(settings, &cfg); err != nil {
		return nil, fmt.Errorf("gcsio: settings: %w", err)
	}
	client, err := NewClient(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &store{bucket: cfg.Bucket, handle: client.Bucket(cfg.Bucket)}, nil
}

// Put streams body to the object. The object exists, whole, only once Close has
// succeeded; an upload that fails part way leaves nothing behind.
func (s *store) Put(ctx context.Context, key, contentType string, body io.Reader) error {
	// Cancelling the writer's context is how an upload is abandoned.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := s.handle.Object(key).NewWriter(ctx)
	w.ContentType = contentType
	w.ChunkSize = chunkSize
	w.ChunkRetryDeadline = time.Minute
	if _, err := io.Copy(w, body); err != nil {
		cancel()
		w.Close()
		return fmt.Errorf("gcsio: upload %s: %w", s.Where(key), err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("gcsio: upload %s: %w", s.Where(key), err)
	}
	return nil
}

func (s *store) Where(key string) string { return "gs://" + s.bucket + "/" + key }

func (s *store) List(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	it := s.handle.Objects(ctx, &storage.Query{Prefix: prefix})
	for {
		attrs, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return keys, nil
		}
		if err != nil {
			return nil, fmt.Errorf("gcsio: list %s: %w", s.Where(prefix), denied(err))
		}
		keys = append(keys, attrs.Name)
	}
}

func (s *store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	r, err := s.handle.Object(key).NewReader(ctx)
	if err != nil {
		return nil, fmt.Errorf("gcsio: get %s: %w", s.Where(key), denied(err))
	}
	return r, nil
}

// Create, Replace, ReadVersion and Delete keep a lease object (objectio.Leaser), with
// GCS's preconditions: ifGenerationMatch=0, then the generation read.

func (s *store) Create(ctx context.Context, key string, body []byte) (string, error) {
	return s.putIf(ctx, key, body, storage.Conditions{DoesNotExist: true})
}

func (s *store) Replace(ctx context.Context, key string, body []byte, version string) (string, error) {
	gen, err := strconv.ParseInt(version, 10, 64)
	if err != nil || gen <= 0 {
		return "", fmt.Errorf("gcsio: replace %s: version %q is no generation", s.Where(key), version)
	}
	return s.putIf(ctx, key, body, storage.Conditions{GenerationMatch: gen})
}

func (s *store) putIf(ctx context.Context, key string, body []byte, cond storage.Conditions) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := s.handle.Object(key).If(cond).NewWriter(ctx)
	w.ContentType = "application/json"
	_, err := w.Write(body)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if apiErr := (*googleapi.Error)(nil); errors.As(err, &apiErr) && apiErr.Code == http.StatusPreconditionFailed {
		return "", fmt.Errorf("gcsio: upload %s: %w: %w", s.Where(key), objectio.ErrChanged, err)
	}
	if err != nil {
		return "", fmt.Errorf("gcsio: upload %s: %w", s.Where(key), denied(err))
	}
	return strconv.FormatInt(w.Attrs().Generation, 10), nil
}

func (s *store) ReadVersion(ctx context.Context, key string) ([]byte, string, error) {
	r, err := s.handle.Object(key).NewReader(ctx)
	if errors.Is(err, storage.ErrObjectNotExist) {
		return nil, "", fmt.Errorf("gcsio: get %s: %w", s.Where(key), fs.ErrNotExist)
	}
	if err != nil {
		return nil, "", fmt.Errorf("gcsio: get %s: %w", s.Where(key), denied(err))
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, "", fmt.Errorf("gcsio: get %s: %w", s.Where(key), err)
	}
	return b, strconv.FormatInt(r.Attrs.Generation, 10), nil
}

func (s *store) Delete(ctx context.Context, key string) error {
	if err := s.handle.Object(key).Delete(ctx); err != nil && !errors.Is(err, storage.ErrObjectNotExist) {
		return fmt.Errorf("gcsio: delete %s: %w", s.Where(key), denied(err))
	}
	return nil
}

// denied marks an answer of 403 as objectio.ErrDenied: credentials without the
// permission, or without the KMS key the object is encrypted with.
func denied(err error) error {
	if apiErr := (*googleapi.Error)(nil); errors.As(err, &apiErr) && apiErr.Code == http.StatusForbidden {
		return fmt.Errorf("%w: %w", objectio.ErrDenied, err)
	}
	return err
}

// Check verifies, before a job starts, that the integration's bucket is reachable, so
// a wrong endpoint, bucket or credential fails fast with a clear message.
func Check(ctx context.Context, id string, cfg Config) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	client, err := NewClient(ctx, cfg)
	if err != nil {
		return fmt.Errorf("integration %q: %w", id, err)
	}
	defer client.Close()
	_, err = client.Bucket(cfg.Bucket).Retryer(storage.WithMaxAttempts(2)).Attrs(ctx)
	if err == nil {
		return nil
	}
	where := "gs://" + cfg.Bucket
	if cfg.Endpoint != "" {
		where += " at " + redact(cfg.Endpoint)
	}
	if errors.Is(err, storage.ErrBucketNotExist) {
		return fmt.Errorf("integration %q: bucket %s does not exist: %w", id, where, err)
	}
	return fmt.Errorf("integration %q: bucket %s is not reachable: %w", id, where, err)
}
