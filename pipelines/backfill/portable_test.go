package main

import (
	"testing"

	"github.com/outflow/outflow/pipelines/internal/pipetest"
)

// The backfill's graph uses only state and timers every runner serves.
func TestPortableState(t *testing.T) {
	pipetest.Portable(t, pipeline(pipetest.AllTypes(t), "/tmp/none/*.ndjson", nil, "run"))
}
