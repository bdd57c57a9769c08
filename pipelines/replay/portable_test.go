package main

import (
	"testing"

	"github.com/outflow/outflow/pipelines/internal/pipetest"
)

// The replay's graph uses only state and timers every runner serves.
func TestPortableState(t *testing.T) {
	pipetest.Portable(t, pipeline(pipetest.AllTypes(t), "/tmp/none", "run"))
}
