package s3io

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/outflow/outflow/io/objectio"
)

// Kind names S3 integrations in object-store targets and configuration.
const Kind = "s3"

func init() { objectio.Register(Kind, newStore) }

// store uploads to one S3 bucket; a streamed body goes through the upload manager,
// as a multipart upload, read part by part, when it is larger than a part.
type store struct {
	bucket   string
	client   *s3.Client
	uploader *manager.Uploader
}

func newStore(ctx context.Context, settings json.RawMessage) (objectio.Store, error) {
	var cfg Config
	if err := json.Unmarshal(settings, &cfg); err != nil {
		return nil, fmt.Errorf("s3io: settings: %w", err)
	}
	client, err := NewClient(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &store{bucket: cfg.Bucket, client: client, uploader: manager.NewUploader(client, func(u *manager.Uploader) {
		u.PartSize = 8 << 20
		u.Concurrency = 2
	})}, nil
}

// Put uploads body. A body already in memory (an io.ReadSeeker: encode.Object's small
// objects) goes up in one PutObject: the upload manager would copy it into a part
// buffer of its own, 8 MiB for an object of a few KiB.
func (s *store) Put(ctx context.Context, key, contentType string, body io.Reader) error {
	in := &s3.PutObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key), Body: body, ContentType: aws.String(contentType)}
	if _, ok := body.(io.ReadSeeker); ok {
		_, err := s.client.PutObject(ctx, in)
		return err
	}
	_, err := s.uploader.Upload(ctx, in)
	return err
}

func (s *store) Where(key string) string { return "s3://" + s.bucket + "/" + key }

func (s *store) List(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	pages := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(prefix)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("s3io: list %s: %w", s.Where(prefix), denied(err))
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys, nil
}

func (s *store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		return nil, fmt.Errorf("s3io: get %s: %w", s.Where(key), denied(err))
	}
	return out.Body, nil
}

// denied marks an answer of 403 as objectio.ErrDenied: credentials without the
// permission, or without the KMS key the object is encrypted with.
func denied(err error) error {
	if apiErr := smithy.APIError(nil); errors.As(err, &apiErr) && apiErr.ErrorCode() == "AccessDenied" ||
		status(err) == http.StatusForbidden {
		return fmt.Errorf("%w: %w", objectio.ErrDenied, err)
	}
	return err
}

// Create, Replace, ReadVersion and Delete keep a lease object (objectio.Leaser), with
// S3's conditional writes: If-None-Match: * and If-Match: ETag.

func (s *store) Create(ctx context.Context, key string, body []byte) (string, error) {
	return s.putIf(ctx, key, body, &s3.PutObjectInput{IfNoneMatch: aws.String("*")})
}

func (s *store) Replace(ctx context.Context, key string, body []byte, version string) (string, error) {
	return s.putIf(ctx, key, body, &s3.PutObjectInput{IfMatch: aws.String(version)})
}

func (s *store) putIf(ctx context.Context, key string, body []byte, in *s3.PutObjectInput) (string, error) {
	in.Bucket, in.Key, in.Body, in.ContentType = aws.String(s.bucket), aws.String(key), bytes.NewReader(body), aws.String("application/json")
	out, err := s.client.PutObject(ctx, in)
	if err != nil {
		// 409 is a concurrent conditional write; 404 answers If-Match for a key that is gone.
		if code := status(err); code == http.StatusPreconditionFailed || code == http.StatusConflict ||
			code == http.StatusNotFound && in.IfMatch != nil {
			return "", fmt.Errorf("s3io: put %s: %w: %w", s.Where(key), objectio.ErrChanged, err)
		}
		return "", fmt.Errorf("s3io: put %s: %w", s.Where(key), denied(err))
	}
	return aws.ToString(out.ETag), nil
}

func (s *store) ReadVersion(ctx context.Context, key string) ([]byte, string, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		if status(err) == http.StatusNotFound {
			return nil, "", fmt.Errorf("s3io: get %s: %w", s.Where(key), iofs.ErrNotExist)
		}
		return nil, "", fmt.Errorf("s3io: get %s: %w", s.Where(key), denied(err))
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, "", fmt.Errorf("s3io: get %s: %w", s.Where(key), err)
	}
	return b, aws.ToString(out.ETag), nil
}

func (s *store) Delete(ctx context.Context, key string) error {
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)}); err != nil {
		return fmt.Errorf("s3io: delete %s: %w", s.Where(key), denied(err))
	}
	return nil
}

// status is the HTTP status of an S3 error, 0 if it has none.
func status(err error) int {
	if re := (*awshttp.ResponseError)(nil); errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}
