// Package oplog is the log operators read: outflow's own messages, from the
// launcher and from its DoFns, on standard error. Beam's and prism's own logging
// goes to slog's default logger, which commands keep quiet (see job.Logger); DoFns
// log here so their alerts are not silenced with it.
package oplog

import (
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

var (
	level  = new(slog.LevelVar) // Info
	logger atomic.Pointer[slog.Logger]
)

func init() {
	logger.Store(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
}

// L returns the operators' logger.
func L() *slog.Logger { return logger.Load() }

// SetLevel sets the lowest level logged.
func SetLevel(l slog.Level) { level.Set(l) }

// Every is how often Due lets one kind of alert through for one integration.
const Every = time.Minute

var lastDue sync.Map // key -> time.Time

// Due reports whether a log line under key (an alert and its integration) may go out
// at now: at most one per Every in a process, however many DoFns raise it.
func Due(key string, now time.Time) bool {
	if last, ok := lastDue.Load(key); ok && now.Sub(last.(time.Time)) < Every {
		return false
	}
	lastDue.Store(key, now)
	return true
}

// Use makes l the operators' logger until the returned func restores the one before;
// for tests that read what operators would.
func Use(l *slog.Logger) (restore func()) {
	before := logger.Swap(l)
	return func() { logger.Store(before) }
}
