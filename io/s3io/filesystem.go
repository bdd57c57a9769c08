package s3io

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Beam's own s3 file system builds its client from the AWS environment alone and never
// addresses buckets path-style, so it cannot reach an S3-compatible server such as
// MinIO on an IP endpoint configured per deployment. outflow registers this one for
// s3:// paths (inputs, the dead-letter store, backfill state) instead: same client as
// the sink, endpoint from the configuration's `files.s3` section or the AWS
// environment (AWS_ENDPOINT_URL_S3), path-style whenever there is an endpoint.
func init() { filesystem.Register("s3", newFilesystem) }

var (
	fsMu   sync.Mutex
	fsConn Connection
)

// SetFilesystem sets how s3:// paths are reached in this process. Workers elsewhere
// take the endpoint from AWS_ENDPOINT_URL_S3.
func SetFilesystem(c Connection) {
	fsMu.Lock()
	defer fsMu.Unlock()
	fsConn = c
}

func filesystemConnection() Connection {
	fsMu.Lock()
	defer fsMu.Unlock()
	c := fsConn
	if c.Endpoint == "" {
		c.Endpoint = cmpOr(os.Getenv("AWS_ENDPOINT_URL_S3"), os.Getenv("AWS_ENDPOINT_URL"))
	}
	return c
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

type fs struct {
	client *s3.Client
	err    error // the client could not be built: every call says why
}

func newFilesystem(ctx context.Context) filesystem.Interface {
	client, err := NewClient(ctx, Config{Connection: filesystemConnection()})
	return &fs{client: client, err: err}
}

func (f *fs) Close() error { return nil }

// split parses s3://bucket/key.
func split(uri string) (bucket, key string, err error) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return "", "", fmt.Errorf("s3io: %q is not an s3://bucket/key path", uri)
	}
	return u.Host, strings.TrimPrefix(u.Path, "/"), nil
}

// List returns the objects whose keys match the glob's key pattern (path.Match: * does
// not cross /).
func (f *fs) List(ctx context.Context, glob string) ([]string, error) {
	if f.err != nil {
		return nil, f.err
	}
	bucket, pattern, err := split(glob)
	if err != nil {
		return nil, err
	}
	prefix := pattern
	if i := strings.IndexAny(pattern, "*?[\\"); i >= 0 {
		prefix = pattern[:i]
	}
	var out []string
	pages := s3.NewListObjectsV2Paginator(f.client, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("s3io: list %s: %w", glob, err)
		}
		for _, o := range page.Contents {
			key := aws.ToString(o.Key)
			ok, err := path.Match(pattern, key)
			if err != nil {
				return nil, fmt.Errorf("s3io: pattern %q: %w", pattern, err)
			}
			if ok {
				out = append(out, "s3://"+bucket+"/"+key)
			}
		}
	}
	return out, nil
}

func (f *fs) OpenRead(ctx context.Context, uri string) (io.ReadCloser, error) {
	return f.get(ctx, uri, nil)
}

// OpenReadAt opens the object at uri from byte offset on, with a ranged GET: a span
// of a large input file (linefile.Span) is read without the bytes before it.
func (f *fs) OpenReadAt(ctx context.Context, uri string, offset int64) (io.ReadCloser, error) {
	return f.get(ctx, uri, aws.String(fmt.Sprintf("bytes=%d-", offset)))
}

func (f *fs) get(ctx context.Context, uri string, byteRange *string) (io.ReadCloser, error) {
	if f.err != nil {
		return nil, f.err
	}
	bucket, key, err := split(uri)
	if err != nil {
		return nil, err
	}
	out, err := f.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Range: byteRange})
	if err != nil {
		return nil, fmt.Errorf("s3io: get %s: %w", uri, err)
	}
	return out.Body, nil
}

// OpenWrite streams what is written into an upload; Close waits for it to complete.
func (f *fs) OpenWrite(ctx context.Context, uri string) (io.WriteCloser, error) {
	if f.err != nil {
		return nil, f.err
	}
	bucket, key, err := split(uri)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	w := &writer{pw: pw, done: make(chan error, 1)}
	go func() { // ends when the writer is closed and the upload is done
		_, err := manager.NewUploader(f.client).Upload(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: pr})
		pr.CloseWithError(err)
		if err != nil {
			err = fmt.Errorf("s3io: put %s: %w", uri, err)
		}
		w.done <- err
	}()
	return w, nil
}

type writer struct {
	pw   *io.PipeWriter
	done chan error
}

func (w *writer) Write(b []byte) (int, error) { return w.pw.Write(b) }

func (w *writer) Close() error {
	w.pw.Close()
	return <-w.done
}

func (f *fs) head(ctx context.Context, uri string) (*s3.HeadObjectOutput, error) {
	if f.err != nil {
		return nil, f.err
	}
	bucket, key, err := split(uri)
	if err != nil {
		return nil, err
	}
	out, err := f.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return nil, fmt.Errorf("s3io: head %s: %w", uri, err)
	}
	return out, nil
}

func (f *fs) Size(ctx context.Context, uri string) (int64, error) {
	out, err := f.head(ctx, uri)
	if err != nil {
		return -1, err
	}
	return aws.ToInt64(out.ContentLength), nil
}

func (f *fs) LastModified(ctx context.Context, uri string) (time.Time, error) {
	out, err := f.head(ctx, uri)
	if err != nil {
		return time.Time{}, err
	}
	return aws.ToTime(out.LastModified), nil
}

func (f *fs) Remove(ctx context.Context, uri string) error {
	if f.err != nil {
		return f.err
	}
	bucket, key, err := split(uri)
	if err != nil {
		return err
	}
	if _, err := f.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}); err != nil {
		return fmt.Errorf("s3io: delete %s: %w", uri, err)
	}
	return nil
}

func (f *fs) Copy(ctx context.Context, from, to string) error {
	if f.err != nil {
		return f.err
	}
	fb, fk, err1 := split(from)
	tb, tk, err2 := split(to)
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	_, err := f.client.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String(tb), Key: aws.String(tk),
		CopySource: aws.String(url.PathEscape(fb + "/" + fk))})
	if err != nil {
		return fmt.Errorf("s3io: copy %s to %s: %w", from, to, err)
	}
	return nil
}
