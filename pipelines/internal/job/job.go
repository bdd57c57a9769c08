// Package job holds what every outflow command shares around its pipeline: exit
// codes, configuration problems, logging, and how a run ends and is reported.
package job

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/oplog"
	"github.com/outflow/outflow/internal/report"
	"github.com/outflow/outflow/io/s3io"
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
	oplog.SetLevel(level)
	return oplog.L()
}

// Failure tells why a run failed, in one line: interrupted, or the root cause.
func Failure(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", context.Cause(ctx))
	}
	slog.Debug("pipeline failed", "error", err)
	return fmt.Errorf("pipeline failed: %s", runners.Cause(err))
}

// LoadConfig loads the configuration at path and sets up how s3:// paths are
// reached; what is wrong is added to problems.
func LoadConfig(path string, problems *[]string) *config.Config {
	if path == "" {
		*problems = append(*problems, "--config is required")
		return nil
	}
	cfg, err := config.Load(path)
	if err != nil {
		*problems = append(*problems, err.Error())
		return nil
	}
	s3io.SetFilesystem(cfg.Files.S3)
	return cfg
}

// UsageError tells every problem with the flags or configuration, then the usage
// line, and returns ExitUsage.
func UsageError(cmd, usage string, problems []string) int {
	fmt.Fprintf(os.Stderr, "%s: %s\n%s\n", cmd, strings.Join(problems, "\n"+cmd+": "), usage)
	return ExitUsage
}

// End closes a run: it records how the run ended in the report, tells the error,
// writes the report to reportPath (if set), prints the summary and returns the code.
func End(cmd string, rep *report.Report, code int, err error, reportPath string) int {
	rep.Finish(code, err)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", cmd, err)
	}
	if reportPath != "" {
		if werr := rep.Write(reportPath); werr != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", cmd, werr)
		}
	}
	rep.Print(os.Stdout)
	return code
}

// ServeWorkers hosts SDK workers when the command line says --worker-pool (see
// package runners) until SIGINT or SIGTERM, and then reports served and the exit code.
func ServeWorkers(cmd string) (code int, served bool) {
	ctx, stop := Context()
	defer stop()
	served, err := runners.ServeWorkerPool(ctx)
	if !served {
		return 0, false
	}
	if err != nil {
		Logger().Error(cmd+": the worker pool failed", "error", err)
		return ExitFailed, true
	}
	return ExitOK, true
}

// Context is cancelled by SIGINT or SIGTERM.
func Context() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// Every calls f every d, from another goroutine, until the returned stop is called;
// stop waits for a call under way to end.
func Every(d time.Duration, f func()) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				f()
			}
		}
	}()
	return func() { close(quit); <-done }
}
