// Package job holds what every outflow command shares around its pipeline: exit
// codes, logging and how a failure is told.
package job

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/outflow/outflow/runners"
)

// Exit codes (CONTRACT §3).
const (
	ExitOK           = 0 // every valid impression delivered
	ExitFailed       = 1 // the pipeline failed
	ExitUsage        = 2 // bad flags or configuration
	ExitDeadLettered = 3 // finished, but some impressions were dead-lettered
)

// Logger returns outflow's logger. Beam and prism log through the default logger, in
// detail meant for Beam's developers (a failure is logged with the whole execution
// plan, several times); outflow tells failures itself, so the default logger is quiet
// unless OUTFLOW_DEBUG is set.
func Logger() *slog.Logger {
	level := slog.LevelInfo
	beamLevel := slog.LevelError + 4
	if os.Getenv("OUTFLOW_DEBUG") != "" {
		level, beamLevel = slog.LevelDebug, slog.LevelDebug
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: beamLevel})))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// Failure tells why a run failed, in one line: interrupted, or the root cause.
func Failure(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", context.Cause(ctx))
	}
	slog.Debug("pipeline failed", "error", err)
	return fmt.Errorf("pipeline failed: %s", runners.Cause(err))
}
