package s3io

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/outflow/outflow/io/objectio"
)

// Kind names S3 integrations in object-store targets and configuration.
const Kind = "s3"

func init() { objectio.Register(Kind, newStore) }

// store uploads to one S3 bucket through the upload manager: a body larger than a
// part goes up as a multipart upload, read part by part.
type store struct {
	bucket   string
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
	return &store{bucket: cfg.Bucket, uploader: manager.NewUploader(client, func(u *manager.Uploader) {
		u.PartSize = 8 << 20
		u.Concurrency = 2
	})}, nil
}

func (s *store) Put(ctx context.Context, key, contentType string, body io.Reader) error {
	_, err := s.uploader.Upload(ctx, &s3.PutObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key),
		Body: body, ContentType: aws.String(contentType)})
	return err
}

func (s *store) Where(key string) string { return "s3://" + s.bucket + "/" + key }
