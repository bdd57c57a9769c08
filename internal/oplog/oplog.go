// Package oplog is the log operators read: outflow's own messages, from the
// launcher and from its DoFns, on standard error. Beam's and prism's own logging
// goes to slog's default logger, which commands keep quiet (see job.Logger); DoFns
// log here so their alerts are not silenced with it.
package oplog

import (
	"log/slog"
	"os"
)

var (
	level  = new(slog.LevelVar) // Info
	logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
)

// L returns the operators' logger.
func L() *slog.Logger { return logger }

// SetLevel sets the lowest level logged.
func SetLevel(l slog.Level) { level.Set(l) }
