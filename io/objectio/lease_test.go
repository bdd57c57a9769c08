package objectio_test

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/testenv"
	"github.com/outflow/outflow/io/gcsio"
	"github.com/outflow/outflow/io/objectio"
	"github.com/outflow/outflow/transforms/encode"
)

// A prefix's lease, on S3 (the in-process server, or MinIO with
// $OUTFLOW_TEST_S3_ENDPOINT) and on the GCS emulator: one holder at a time, named to
// the others; a later run of the same job takes it over, as does anyone once it has
// expired or with breakIt; the run it was taken from cannot renew it; of runs racing
// for a free prefix, exactly one gets it; released, it is gone.
func TestLeases(t *testing.T) {
	t.Run("s3", func(t *testing.T) {
		s3 := testenv.NewS3(t)
		testLeases(t, s3.ObjectTarget("acme-s3", s3.Bucket(t), "acme"))
	})
	t.Run("gcs", func(t *testing.T) {
		gcs := testenv.NewGCS(t)
		settings, _ := json.Marshal(gcsio.Config{ObjectSpec: encode.ObjectSpec{Bucket: gcs.Bucket(t), Prefix: "acme"}, Endpoint: gcs.Endpoint})
		testLeases(t, objectio.Target{ID: "acme-gcs", Kind: gcsio.Kind, Settings: settings, Spec: encode.ObjectSpec{Prefix: "acme"}})
	})
}

func testLeases(t *testing.T, target objectio.Target) {
	ctx := context.Background()
	run := func(job, run string) objectio.LeaseInfo {
		return objectio.LeaseInfo{Job: job, Run: run, Holder: run + " on test (pid 1)"}
	}
	acquire := func(info objectio.LeaseInfo, breakIt bool) (*objectio.Lease, *objectio.LeaseInfo, error) {
		t.Helper()
		l, took, err := objectio.Acquire(ctx, target, info, breakIt)
		if err != nil && !errors.As(err, new(*objectio.HeldError)) {
			t.Fatalf("%s: %v", info.Run, err)
		}
		return l, took, err
	}

	a, took, err := acquire(run("backfill 1", "a"), false)
	if err != nil || took != nil {
		t.Fatalf("a free prefix: %v, took %+v", err, took)
	}
	if !strings.HasSuffix(a.Where, "/acme/"+objectio.LeaseName) {
		t.Errorf("the lease is %s, want it under the prefix", a.Where)
	}
	// Another job's run is refused, naming the holder.
	if _, _, err := acquire(run("stream 1", "b"), false); err == nil || !strings.Contains(err.Error(), "a on test (pid 1)") ||
		!strings.Contains(err.Error(), "backfill 1") {
		t.Fatalf("another job: %v, want refused naming a and its job", err)
	}
	if err := a.Renew(ctx); err != nil {
		t.Fatalf("renew: %v", err)
	}
	// A later run of the same job takes it over; the earlier one has lost it.
	a2, took, err := acquire(run("backfill 1", "a2"), false)
	if err != nil || took == nil || took.Run != "a" {
		t.Fatalf("the same job again: %v, took %+v; want a's lease", err, took)
	}
	if err := a.Renew(ctx); !errors.Is(err, objectio.ErrChanged) {
		t.Errorf("a renews a lease taken from it: %v", err)
	}
	// Broken, whoever holds it.
	b, took, err := acquire(run("stream 1", "b"), true)
	if err != nil || took == nil || took.Run != "a2" {
		t.Fatalf("--break-lease: %v, took %+v; want a2's lease", err, took)
	}
	if err := a2.Renew(ctx); !errors.Is(err, objectio.ErrChanged) {
		t.Errorf("a2 renews a lease broken from it: %v", err)
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a2.Renew(ctx); !errors.Is(err, objectio.ErrChanged) { // S3 answers 404 for a key that is gone
		t.Errorf("a2 renews a lease released since by the run that broke it: %v", err)
	}

	// Of runs racing for the free prefix, one gets it.
	var wg sync.WaitGroup
	got := make([]*objectio.Lease, 6)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], _, _ = acquire(run("job "+string(rune('a'+i)), "race "+string(rune('a'+i))), false)
		}()
	}
	wg.Wait()
	var winner *objectio.Lease
	for _, l := range got {
		if l != nil {
			if winner != nil {
				t.Fatalf("two runs hold %s at once", l.Where)
			}
			winner = l
		}
	}
	if winner == nil {
		t.Fatal("no run got the free prefix")
	}

	// Expired: another job takes it. (A lease whose holder died, written as it left it.)
	leaser, _ := mustStore(t, target).(objectio.Leaser)
	stale, _ := json.Marshal(objectio.LeaseInfo{Job: "dead job", Run: "dead", Holder: "dead on test", Since: time.Now().Add(-time.Hour),
		Expires: time.Now().Add(-time.Second)})
	if err := winner.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := leaser.Create(ctx, "acme/"+objectio.LeaseName, stale); err != nil {
		t.Fatal(err)
	}
	c, took, err := acquire(run("backfill 2", "c"), false)
	if err != nil || took == nil || took.Run != "dead" {
		t.Fatalf("an expired lease: %v, took %+v; want the dead run's", err, took)
	}
	if err := c.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := leaser.ReadVersion(ctx, "acme/"+objectio.LeaseName); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after release, reading the lease: %v, want not found", err)
	}
}

func mustStore(t *testing.T, target objectio.Target) objectio.Store {
	s, err := objectio.NewStore(context.Background(), target.Kind, target.Settings)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
