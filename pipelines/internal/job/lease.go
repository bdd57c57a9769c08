package job

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/oplog"
	"github.com/outflow/outflow/io/objectio"
	"github.com/outflow/outflow/pipelines/internal/sinks"
)

// BreakLease is the flag of the commands that write objects: take the prefixes'
// leases whoever holds them.
func BreakLease() *bool {
	return flag.Bool("break-lease", false, "take the object store prefixes' leases even from a live run of another job "+
		"(one that died holds its lease for at most "+objectio.LeaseTTL.String()+"); two writers at once may store impressions twice")
}

// ErrLeaseLost is the cause a run is cancelled with when another run took one of its
// leases: it must stop writing, and fail.
var ErrLeaseLost = errors.New("lost a lease")

// Leases are the leases a run holds on its object store prefixes.
type Leases struct {
	held []*objectio.Lease
	stop context.CancelFunc
	done sync.WaitGroup
}

// HoldLeases takes the lease of every object store prefix of cfg for this run of job
// (objectio.Acquire: job names what makes two runs the same job) and renews them
// until Release. If one is lost, lost is called with an error wrapping ErrLeaseLost.
// A prefix another job's run holds is ExitUsage, naming the holder. Credentials that
// may not write or read the lease only get a warning.
func HoldLeases(ctx context.Context, cfg *config.Config, command, job string, breakIt bool, lost func(error)) (*Leases, int, error) {
	host, _ := os.Hostname()
	info := objectio.LeaseInfo{Job: job, Run: uuid.NewString(), Holder: fmt.Sprintf("%s on %s (pid %d)", command, host, os.Getpid())}
	ls := &Leases{}
	for _, t := range sinks.ObjectTargets(cfg, cfg.Integrations) {
		l, took, err := objectio.Acquire(ctx, t, info, breakIt)
		if errors.Is(err, objectio.ErrDenied) {
			// As for listing (CheckObjects): write-only credentials are not refused.
			oplog.L().Warn("cannot hold the prefix's lease: another run writing there at the same time would not be kept out, "+
				"and could store impressions twice", "integration", t.ID, "error", err)
			continue
		}
		if err != nil {
			ls.Release()
			if held := (*objectio.HeldError)(nil); errors.As(err, &held) {
				return nil, ExitUsage, fmt.Errorf("integration %q: %w", t.ID, err)
			}
			return nil, ExitFailed, err
		}
		if took != nil {
			why := "it had expired"
			switch {
			case took.Job == job:
				why = "an earlier run of this job"
			case time.Now().Before(took.Expires):
				why = "--break-lease"
			}
			oplog.L().Warn("took over the lease of another run", "lease", l.Where, "why", why, "holder", took.Holder,
				"job", took.Job, "expires", took.Expires)
		}
		ls.held = append(ls.held, l)
	}
	if len(ls.held) == 0 {
		return ls, ExitOK, nil // no object store, or none that could be leased
	}
	renewing, stop := context.WithCancel(context.WithoutCancel(ctx))
	ls.stop = stop
	ls.done.Add(1)
	go func() {
		defer ls.done.Done()
		tick := time.NewTicker(objectio.LeaseTTL / 4)
		defer tick.Stop()
		for {
			select {
			case <-renewing.Done():
				return
			case <-tick.C:
			}
			for _, l := range ls.held {
				err := renew(renewing, l)
				if renewing.Err() != nil {
					return // released
				}
				if err != nil {
					// Another run's now, or nobody's: not for Release to remove.
					ls.held = slices.DeleteFunc(ls.held, func(h *objectio.Lease) bool { return h == l })
					lost(fmt.Errorf("%w: %w", ErrLeaseLost, err))
					return
				}
			}
		}
	}()
	return ls, ExitOK, nil
}

// renew renews l, and returns an error once l is lost: taken by another run, or not
// renewed before it expired.
func renew(ctx context.Context, l *objectio.Lease) error {
	ctx, cancel := context.WithTimeout(ctx, objectio.LeaseTTL/4)
	defer cancel()
	err := l.Renew(ctx)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, objectio.ErrChanged):
		return err
	case time.Now().After(l.Expires()):
		return fmt.Errorf("%s: not renewed before it expired: %w", l.Where, err)
	}
	oplog.L().Warn("could not renew a lease; trying again", "lease", l.Where, "expires", l.Expires(), "error", err)
	return nil
}

// Release stops renewing and removes the leases, for the next run not to wait for
// them to expire.
func (ls *Leases) Release() {
	if ls.stop != nil {
		ls.stop()
		ls.done.Wait()
	}
	for _, l := range ls.held {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := l.Release(ctx); err != nil {
			oplog.L().Warn("could not remove a lease; it expires on its own", "lease", l.Where, "expires", l.Expires(), "error", err)
		}
		cancel()
	}
	ls.held = nil
}
