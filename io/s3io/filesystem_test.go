package s3io_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/outflow/outflow/internal/linefile"
	"github.com/outflow/outflow/internal/testenv"
	"github.com/outflow/outflow/io/s3io"
)

// Spans of an input object on an S3 API server are read with ranged GETs and give
// the object's lines, each once, as reading it whole does.
func TestFilesystemReadsSpans(t *testing.T) {
	srv := testenv.NewS3(t)
	bucket := srv.Bucket(t)
	s3io.SetFilesystem(s3io.Connection{Endpoint: srv.Endpoint, Region: "us-east-1"})
	defer s3io.SetFilesystem(s3io.Connection{})
	var b strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&b, `{"line":%d,"pad":"%x"}`+"\n", i, i*7919)
	}
	content := b.String()
	ctx := context.Background()
	if _, err := srv.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("in/a.ndjson"),
		Body: strings.NewReader(content)}); err != nil {
		t.Fatal(err)
	}
	path, size := "s3://"+bucket+"/in/a.ndjson", int64(len(content))
	read := func(o linefile.Options) []string {
		var got []string
		if err := linefile.Lines(ctx, path, o, func(l []byte) error { got = append(got, string(l)); return nil }); err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		return got
	}
	want := read(linefile.Options{Size: size})
	var got []string
	var spans int
	err := linefile.Spans(ctx, path, size, 10<<10, func(s linefile.Span) {
		spans++
		got = append(got, read(linefile.Options{Size: size, Start: s.Start, End: s.End})...)
	})
	if err != nil || spans < 5 || len(want) != 5000 || !slices.Equal(got, want) {
		t.Errorf("%d spans (%v) gave %d lines; want the %d of the whole object, alike", spans, err, len(got), len(want))
	}
}
