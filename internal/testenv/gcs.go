package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
)

// GCSEndpointEnv names a running GCS emulator (e.g. fake-gcs-server in a container,
// started with -scheme http) to test against instead of the in-process one: its base
// URL, such as http://localhost:4443.
const GCSEndpointEnv = "OUTFLOW_TEST_GCS_ENDPOINT"

// GCS is a GCS API server for one test.
type GCS struct {
	// Endpoint is the server's base URL, e.g. http://127.0.0.1:40123.
	Endpoint string
	// Client reads and writes the server with the JSON API.
	Client *storage.Client
}

// NewGCS returns the emulator named by $OUTFLOW_TEST_GCS_ENDPOINT, or starts an
// in-process fake-gcs-server. It sets STORAGE_EMULATOR_HOST, so that GCS clients the
// test starts, in process or as a subprocess, reach it too.
func NewGCS(t testing.TB) *GCS {
	t.Helper()
	endpoint := strings.TrimSuffix(os.Getenv(GCSEndpointEnv), "/")
	if endpoint == "" {
		// Beam's gcs file system reads through the XML API, which fake-gcs-server serves
		// only to requests addressed to its public host: make that its own address.
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{
			Scheme:     "http",
			Host:       "127.0.0.1",
			Port:       uint16(port),
			PublicHost: fmt.Sprintf("127.0.0.1:%d", port),
			NoListener: false,
		})
		if err != nil {
			t.Fatalf("start fake-gcs-server: %v", err)
		}
		t.Cleanup(srv.Stop)
		endpoint = srv.URL()
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		t.Fatalf("GCS emulator endpoint %q is not a URL", endpoint)
	}
	// The Go client takes host:port (and assumes http) or a URL; other clients
	// expect host:port, so give that form for http.
	host := endpoint
	if u.Scheme == "http" {
		host = u.Host
	}
	t.Setenv("STORAGE_EMULATOR_HOST", host)

	client, err := storage.NewClient(context.Background(),
		option.WithEndpoint(endpoint+"/storage/v1/"),
		option.WithoutAuthentication(),
		// The client's default XML API reads go to http://host/bucket/object, which
		// fake-gcs-server serves only on its public host (storage.googleapis.com).
		storage.WithJSONReads())
	if err != nil {
		t.Fatalf("GCS client: %v", err)
	}
	t.Cleanup(func() { client.Close() })
	return &GCS{Endpoint: endpoint, Client: client}
}

// Bucket creates a bucket with a fresh name, so tests sharing a server never meet.
func (g *GCS) Bucket(t testing.TB) string {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	name := "outflow-test-" + hex.EncodeToString(b)
	// Emulators ignore the project, but the client requires one.
	if err := g.Client.Bucket(name).Create(context.Background(), "outflow-test", nil); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	return name
}

// Objects returns every object under prefix in bucket: name -> bytes.
func (g *GCS) Objects(t testing.TB, bucket, prefix string) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	out := map[string][]byte{}
	it := g.Client.Bucket(bucket).Objects(ctx, &storage.Query{Prefix: prefix})
	for {
		attrs, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return out
		}
		if err != nil {
			t.Fatalf("list gs://%s/%s: %v", bucket, prefix, err)
		}
		r, err := g.Client.Bucket(bucket).Object(attrs.Name).NewReader(ctx)
		if err != nil {
			t.Fatalf("get gs://%s/%s: %v", bucket, attrs.Name, err)
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatalf("read gs://%s/%s: %v", bucket, attrs.Name, err)
		}
		out[attrs.Name] = b
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
