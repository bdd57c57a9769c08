package job

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/oplog"
	"github.com/outflow/outflow/internal/ops"
	"github.com/outflow/outflow/internal/report"
	"github.com/outflow/outflow/io/gcsio"
	"github.com/outflow/outflow/io/objectio"
	"github.com/outflow/outflow/io/s3io"
	"github.com/outflow/outflow/pipelines/internal/sinks"
)

// MetricsAddr is --metrics-addr (CONTRACT §6), for the commands that serve metrics.
func MetricsAddr() *string {
	return flag.String("metrics-addr", "", "serve /metrics, /healthz and /readyz on HOST:PORT (e.g. 127.0.0.1:9464); off unless given")
}

// ServeOps serves metrics and probes on addr, made from snapshot (package ops); with
// no addr it serves nothing and returns a nil server, whose methods do nothing.
func ServeOps(addr string, snapshot func() *report.Report, more ...prometheus.Collector) (*ops.Server, error) {
	if addr == "" {
		return nil, nil
	}
	return ops.Start(addr, snapshot, more...)
}

// CheckStores reaches the bucket of every object store integration of cfg, so a job
// fails (or is not ready) at its start rather than at its first object.
// A bucket that several integrations share is reached once, for the first of them.
func CheckStores(ctx context.Context, cfg *config.Config) error {
	var errs []error
	checked := map[string]bool{}
	for _, in := range cfg.Integrations {
		var bucket string
		switch in.Type {
		case config.S3:
			bucket = fmt.Sprint("s3", in.S3.Connection, in.S3.Bucket)
		case config.GCS:
			bucket = fmt.Sprint("gcs", in.GCS.Endpoint, in.GCS.Bucket)
		default:
			continue
		}
		if checked[bucket] {
			continue
		}
		checked[bucket] = true
		if in.Type == config.S3 {
			errs = append(errs, s3io.Check(ctx, in.ID, *in.S3))
		} else {
			errs = append(errs, gcsio.Check(ctx, in.ID, *in.GCS))
		}
	}
	return errors.Join(errs...)
}

// CheckObjects refuses, with ExitUsage, a job that cannot write beside objects
// already in its integrations' prefixes (objectio.Conflicts): another format, or an
// earlier run's larger window. Credentials that may write but not list are not
// refused: the check is skipped for them, with a warning.
func CheckObjects(ctx context.Context, cfg *config.Config) (int, error) {
	targets := sinks.ObjectTargets(cfg, cfg.Integrations)
	found := make([][]objectio.Conflict, len(targets))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8) // one listing a prefix, several at once
	for i, t := range targets {
		g.Go(func() error {
			var err error
			found[i], err = objectio.Conflicts(gctx, t)
			if errors.Is(err, objectio.ErrDenied) {
				oplog.L().Warn("cannot list the integration's objects: not checked for objects it cannot write beside",
					"integration", t.ID, "error", err)
				return nil
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return ExitFailed, err
	}
	var lines []string
	for ti, t := range targets {
		conflicts := found[ti]
		for i, c := range conflicts {
			if i == 5 {
				lines = append(lines, fmt.Sprintf("  integration %q: and %d more objects", t.ID, len(conflicts)-i))
				break
			}
			lines = append(lines, fmt.Sprintf("  integration %q: %s %s", t.ID, c.Object, c.Why))
		}
	}
	if lines == nil {
		return ExitOK, nil
	}
	return ExitUsage, fmt.Errorf("refusing to write objects beside ones already in the prefix that it cannot "+
		"leave out or would mix formats with; nothing was written:\n%s", strings.Join(lines, "\n"))
}
