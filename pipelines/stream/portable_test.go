package main

import (
	"testing"

	"github.com/outflow/outflow/io/kafkaio"
	"github.com/outflow/outflow/pipelines/internal/pipetest"
)

// The stream's graph uses only state and timers every runner serves.
func TestPortableState(t *testing.T) {
	cfg := pipetest.AllTypes(t)
	cfg.Live = true
	pipetest.Portable(t, pipeline(cfg, kafkaio.Config{Brokers: []string{"127.0.0.1:9"}, Topic: "impressions", Group: "outflow"}, "stream-test"))
}
