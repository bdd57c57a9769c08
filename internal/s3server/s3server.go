// Package s3server runs an S3 API server on loopback (gofakes3), for the demo and
// for tests: in memory, or keeping objects as files in a directory.
package s3server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3afero"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/spf13/afero"
)

// Server is a running S3 API server.
type Server struct {
	// Endpoint is the server's URL, for path-style clients: http://127.0.0.1:PORT.
	Endpoint string
	// Dir, when set, holds the objects as files: Dir/buckets/BUCKET/KEY.
	Dir string

	backend gofakes3.Backend
	srv     *http.Server
	done    chan error
}

// Start serves on a free loopback port. With dir "", objects live in memory.
// gofakes3 is served over plain HTTP on purpose: behind TLS it stores aws-chunked
// bodies corrupted.
func Start(dir string) (*Server, error) {
	s := &Server{Dir: dir, done: make(chan error, 1)}
	if dir == "" {
		s.backend = s3mem.New()
	} else {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, err
		}
		fs, err := s3afero.NewBasePathFs(afero.NewOsFs(), abs, s3afero.FsPathCreateAll)
		if err != nil {
			return nil, fmt.Errorf("s3server: %s: %w", dir, err)
		}
		if s.backend, err = s3afero.MultiBucket(fs); err != nil {
			return nil, fmt.Errorf("s3server: %s: %w", dir, err)
		}
	}
	faker := gofakes3.New(s.backend, gofakes3.WithLogger(gofakes3.StdLog(log.New(io.Discard, "", 0))))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("s3server: %w", err)
	}
	s.Endpoint = "http://" + ln.Addr().String()
	s.srv = &http.Server{Handler: faker.Server(), ReadHeaderTimeout: 10 * time.Second}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// CreateBucket creates a bucket; one that exists already is fine.
func (s *Server) CreateBucket(name string) error {
	err := s.backend.CreateBucket(name)
	if errors.Is(err, gofakes3.ErrBucketAlreadyExists) || gofakes3.HasErrorCode(err, gofakes3.ErrBucketAlreadyExists) {
		return nil
	}
	return err
}

// Close stops the server.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if serr := <-s.done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
