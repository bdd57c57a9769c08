// Package s3io writes data objects to Amazon S3 or an S3-compatible server.
package s3io

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// DefaultRegion is used when neither the config nor the AWS chain names a region.
const DefaultRegion = "us-east-1"

// NewClient returns an S3 client for cfg: credentials from the standard AWS chain;
// with an endpoint, path-style addressing for S3-compatible servers. Clients are
// built once per connection and AWS environment in a process and shared (they are
// safe for concurrent use): the AWS configuration, CA bundle included, was loaded for
// every integration in every worker and for every s3:// input file read, about a
// megabyte of heap each.
func NewClient(ctx context.Context, cfg Config) (*s3.Client, error) {
	key := fmt.Sprint(cfg.Connection, awsEnvironment())
	clientsMu.Lock()
	defer clientsMu.Unlock()
	if c, ok := clients[key]; ok {
		return c, nil
	}
	c, err := newClient(ctx, cfg.Connection)
	if err == nil {
		clients[key] = c
	}
	return c, err
}

// clients are the clients built, by connection and AWS environment.
var (
	clientsMu sync.Mutex
	clients   = map[string]*s3.Client{}
)

// awsEnvironment is what the AWS chain reads from the environment: another value
// (a test's, say) is another client.
func awsEnvironment() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") {
			env = append(env, kv)
		}
	}
	slices.Sort(env)
	return env
}

func newClient(ctx context.Context, cfg Connection) (*s3.Client, error) {
	opts := []func(*awsconfig.LoadOptions) error{
		// Transient errors are retried with backoff for about a minute before the
		// upload, and with it the bundle, fails.
		awsconfig.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = 6
				o.MaxBackoff = 20 * time.Second
			})
		}),
	}
	if cfg.Region != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.Region))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3io: load AWS configuration: %w", err)
	}
	if ac.Region == "" {
		ac.Region = DefaultRegion
	}
	return s3.NewFromConfig(ac, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
			o.UsePathStyle = true
			// S3-compatible servers differ in their support of the newer default
			// checksums; send them only where the API requires them.
			o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
			o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		}
	}), nil
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
	_, err = client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(cfg.Bucket)}, func(o *s3.Options) {
		o.RetryMaxAttempts = 2
	})
	if err != nil {
		where := "s3://" + cfg.Bucket
		if cfg.Endpoint != "" {
			where += " at " + cfg.Endpoint
		}
		return fmt.Errorf("integration %q: bucket %s is not reachable: %w", id, where, err)
	}
	return nil
}
