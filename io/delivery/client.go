package delivery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"syscall"
	"time"

	"github.com/outflow/outflow/internal/configkit"
)

// ErrPrivateAddress is returned when a destination resolves to an address outflow
// refuses to reach: loopback, private, link-local (cloud metadata) and the like.
var ErrPrivateAddress = errors.New("destination address is private, loopback or link-local; refused (allow_private_destinations is false)")

// clients is the worker's registry of HTTP clients, one per destination (as limiters),
// so every job and bundle sending there shares its connections.
var clients sync.Map // destination key -> *http.Client

func clientFor(key string, p Config, allowPrivate bool) *http.Client {
	if c, ok := clients.Load(key); ok {
		return c.(*http.Client)
	}
	c, _ := clients.LoadOrStore(key, newClient(p.MaxInFlight, allowPrivate))
	return c.(*http.Client)
}

// newClient returns the HTTP client of one destination. Unless allowPrivate, every
// connection is checked at dial time, after DNS: a name that resolves, or re-resolves,
// to a private address is refused (SSRF). Redirects are not followed: a destination
// answers for itself.
func newClient(maxConns int, allowPrivate bool) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		dialer.Control = func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: %s", ErrPrivateAddress, address)
			}
			if !configkit.IsPublic(ap.Addr()) {
				return fmt.Errorf("%w: %s", ErrPrivateAddress, ap.Addr())
			}
			return nil
		}
	}
	transport := &http.Transport{
		Proxy:                 nil, // a proxy would hide the address the guard must see
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          maxConns * 2,
		MaxIdleConnsPerHost:   maxConns * 2,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// send makes one request and reads the answer (the body up to 64 KiB).
func send(ctx context.Context, c *http.Client, req *http.Request, timeout time.Duration) *Response {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := c.Do(req.WithContext(ctx))
	if err != nil {
		return &Response{Err: transportError(err, timeout)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: body}
}

// transportError keeps the cause of a failed request without the URL, which may
// carry a key.
func transportError(err error, timeout time.Duration) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no answer within %v", timeout)
	}
	return err
}
