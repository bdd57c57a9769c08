package objectio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"
)

// A prefix has one writer at a time. Two runs of different jobs writing one window at
// once would each leave out only what the other had stored before it listed, and
// store the rest twice; so each run holds a lease on its integrations' prefixes: an
// object created only where none is, renewed while the run lasts, and left to expire
// when the run dies.

// LeaseName is the lease object of a prefix, beside its dt= partitions.
const LeaseName = "_outflow.lease"

// LeaseTTL is how long a lease outlives its last renewal; it is renewed every
// LeaseTTL/4, so a holder misses three renewals before another run may take it.
const LeaseTTL = time.Minute

// ErrChanged is what a Leaser returns when a conditional write finds the object
// present (Create) or changed (Replace).
var ErrChanged = errors.New("the object is there, or changed")

// Leaser is a store that can keep a lease object: written only where none is, or only
// over the version read. Versions are ETags (S3) or generations (GCS).
type Leaser interface {
	// Create writes body at key if no object is there (S3 If-None-Match: *, GCS
	// ifGenerationMatch=0), else returns ErrChanged.
	Create(ctx context.Context, key string, body []byte) (version string, err error)
	// Replace writes body at key if the object there is still at version, else
	// returns ErrChanged.
	Replace(ctx context.Context, key string, body []byte, version string) (string, error)
	// ReadVersion returns the object at key and its version; fs.ErrNotExist if none.
	ReadVersion(ctx context.Context, key string) ([]byte, string, error)
	// Delete removes the object at key.
	Delete(ctx context.Context, key string) error
}

// LeaseInfo is what a lease object holds.
type LeaseInfo struct {
	// Job says what makes two runs the same job (for a backfill, its configuration
	// and input; for a stream, its topic and group): a run of the job that holds a
	// lease takes it over, since a run killed a moment ago would otherwise hold its
	// own restart back, and the same job writes the same objects.
	Job string `json:"job"`
	// Run is this run's own id.
	Run string `json:"run"`
	// Holder says who holds it, for people: command, host and process.
	Holder  string    `json:"holder"`
	Since   time.Time `json:"since"`
	Expires time.Time `json:"expires"`
}

// HeldError is the answer to a run whose prefix another job's run holds.
type HeldError struct {
	Where string // the lease object
	Info  LeaseInfo
}

func (e *HeldError) Error() string {
	const stamp = time.RFC3339
	return fmt.Sprintf("%s: the prefix is held by %s (%s) since %s, its lease expiring %s unless renewed: "+
		"one writer at a time, or impressions could be stored twice; wait for it to end, or if it died, for its lease "+
		"to expire, or pass --break-lease", e.Where, e.Info.Holder, e.Info.Job, e.Info.Since.UTC().Format(stamp),
		e.Info.Expires.UTC().Format(stamp))
}

// Lease is a lease a run holds on one prefix.
type Lease struct {
	Where   string // the lease object, for messages
	store   Leaser
	key     string
	info    LeaseInfo
	version string
}

// Acquire takes the lease of t's prefix for info's job and run: when no lease is
// there, when one of the same job is, when one has expired, or, with breakIt, from
// any holder. Otherwise it returns a *HeldError naming the holder. took names the run
// whose lease was taken over, if any. Credentials that may not write or read the lease
// give an error wrapping ErrDenied.
func Acquire(ctx context.Context, t Target, info LeaseInfo, breakIt bool) (l *Lease, took *LeaseInfo, err error) {
	store, err := NewStore(ctx, t.Kind, t.Settings)
	if err != nil {
		return nil, nil, fmt.Errorf("integration %q: %w", t.ID, err)
	}
	leaser, ok := store.(Leaser)
	if !ok {
		return nil, nil, fmt.Errorf("integration %q: the %s store cannot hold a lease", t.ID, t.Kind)
	}
	key := LeaseName
	if t.Spec.Prefix != "" {
		key = t.Spec.Prefix + "/" + key
	}
	l = &Lease{Where: store.Where(key), store: leaser, key: key, info: info}
	l.info.Since = time.Now().UTC()
	l.info.Expires = l.info.Since.Add(LeaseTTL)
	body, err := json.Marshal(l.info)
	if err != nil {
		return nil, nil, err
	}
	// A few rounds: each loses only to a run that wrote the lease in between.
	for range 3 {
		if l.version, err = leaser.Create(ctx, key, body); err == nil {
			return l, nil, nil
		}
		if !errors.Is(err, ErrChanged) {
			return nil, nil, fmt.Errorf("integration %q: create %s: %w", t.ID, l.Where, err)
		}
		cur, version, err := leaser.ReadVersion(ctx, key)
		if errors.Is(err, fs.ErrNotExist) {
			continue // released since
		}
		if err != nil {
			return nil, nil, fmt.Errorf("integration %q: read %s: %w", t.ID, l.Where, err)
		}
		var other LeaseInfo
		if json.Unmarshal(cur, &other) != nil {
			other = LeaseInfo{Holder: "something that is not an outflow lease"} // expired: taken over
		}
		switch {
		case other.Run == info.Run:
			l.version = version // a retried Create that had succeeded
			return l, nil, nil
		case other.Job != info.Job && time.Now().Before(other.Expires) && !breakIt:
			return nil, nil, &HeldError{Where: l.Where, Info: other}
		}
		if l.version, err = leaser.Replace(ctx, key, body, version); err == nil {
			return l, &other, nil
		}
		if !errors.Is(err, ErrChanged) {
			return nil, nil, fmt.Errorf("integration %q: take over %s: %w", t.ID, l.Where, err)
		}
	}
	return nil, nil, fmt.Errorf("integration %q: %s keeps changing: another run is taking it", t.ID, l.Where)
}

// Renew extends the lease by LeaseTTL. An error wrapping ErrChanged means another run
// took it: this run must stop writing.
func (l *Lease) Renew(ctx context.Context) error {
	info := l.info
	info.Expires = time.Now().UTC().Add(LeaseTTL)
	body, err := json.Marshal(info)
	if err != nil {
		return err
	}
	version, err := l.store.Replace(ctx, l.key, body, l.version)
	if err != nil {
		if errors.Is(err, ErrChanged) {
			err = fmt.Errorf("%s: another run took the lease (--break-lease, or it had expired): %w", l.Where, err)
		}
		return err
	}
	l.info, l.version = info, version
	return nil
}

// Expires is when the lease expires unless renewed.
func (l *Lease) Expires() time.Time { return l.info.Expires }

// Release removes the lease, for the next run not to wait for it to expire.
func (l *Lease) Release(ctx context.Context) error { return l.store.Delete(ctx, l.key) }
