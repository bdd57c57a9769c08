package testenv

import (
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/outflow/outflow/io/objectio"
)

// Fault is what FaultyS3 does to one object download.
type Fault int

const (
	// Pass forwards the download untouched.
	Pass Fault = iota
	// Reset sends the headers and half the body, then drops the connection.
	Reset
	// Unavailable answers 503 Slow Down, as S3 does under load.
	Unavailable
	// Denied answers 403 Access Denied, as S3 does to credentials without the
	// permission (or the KMS key) for the request.
	Denied
)

// FaultyS3 serves the S3 API of endpoint through a proxy on loopback whose requests
// for one object (GET, PUT, HEAD of /bucket/key; not listings, nor the prefixes'
// leases, objectio.LeaseName) suffer what fault says,
// given the method, the object's path and how many such requests came before. Host
// headers pass unchanged, so signed requests stay valid behind it.
func FaultyS3(t testing.TB, endpoint string, fault func(method, path string, n int) Fault) string {
	t.Helper()
	target, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host
	}}
	var mu sync.Mutex
	counts := map[string]int{} // downloads of each path so far
	count := func(path string) int {
		mu.Lock()
		defer mu.Unlock()
		counts[path]++
		return counts[path] - 1
	}
	isObject := func(r *http.Request) bool {
		bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		return bucket != "" && key != "" && !r.URL.Query().Has("list-type") && path.Base(key) != objectio.LeaseName
	}
	return HTTPServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isObject(r) {
			proxy.ServeHTTP(w, r)
			return
		}
		switch fault(r.Method, r.URL.Path, count(r.Method+" "+r.URL.Path)) {
		case Reset:
			proxy.ServeHTTP(&halfWriter{ResponseWriter: w}, r)
		case Unavailable:
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
		case Denied:
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`)
		default:
			proxy.ServeHTTP(w, r)
		}
	}))
}

// halfWriter passes a response on until half its declared length is written, then
// aborts the connection.
type halfWriter struct {
	http.ResponseWriter
	left int64 // bytes still allowed, once set
	set  bool  // a 200 with a Content-Length was sent
}

func (h *halfWriter) WriteHeader(code int) {
	if n, err := strconv.ParseInt(h.Header().Get("Content-Length"), 10, 64); err == nil && code == http.StatusOK {
		h.left, h.set = n/2, true
	}
	h.ResponseWriter.WriteHeader(code)
}

func (h *halfWriter) Write(b []byte) (int, error) {
	if !h.set {
		return h.ResponseWriter.Write(b)
	}
	if int64(len(b)) > h.left {
		h.ResponseWriter.Write(b[:h.left])
		if f, ok := h.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		panic(http.ErrAbortHandler) // the client sees the connection drop mid-body
	}
	h.left -= int64(len(b))
	return h.ResponseWriter.Write(b)
}
