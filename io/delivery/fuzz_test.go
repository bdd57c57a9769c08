package delivery

import (
	"net/http"
	"testing"
	"time"
)

// FuzzRetryAfter: any header value gives a pause between 0 and a day, never a panic.
func FuzzRetryAfter(f *testing.F) {
	for _, v := range []string{"120", "0", "-1", "Wed, 21 Oct 2026 07:28:00 GMT", "Wed, 21 Oct 2026 07:28:00", "1e9", " 5 ", "99999999999999999999"} {
		f.Add(v)
	}
	now := time.Date(2026, 10, 21, 7, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		h := http.Header{}
		h.Set("Retry-After", v)
		if d := RetryAfter(h, now); d < 0 || d > maxRetryAfter*time.Second {
			t.Fatalf("Retry-After %q gave %v", v, d)
		}
	})
}
