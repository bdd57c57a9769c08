// Package progress counts work done by pipelines running in this process, so the
// command that launched them can show it while they run. It sees only workers in
// this process (the embedded prism runner, or LOOPBACK workers); on remote runners
// the counts stay at zero.
package progress

import (
	"sync"
	"sync/atomic"
)

var counters sync.Map // key -> *atomic.Int64

func counter(key string) *atomic.Int64 {
	if c, ok := counters.Load(key); ok {
		return c.(*atomic.Int64)
	}
	c, _ := counters.LoadOrStore(key, new(atomic.Int64))
	return c.(*atomic.Int64)
}

// Add counts n more units of work under key.
func Add(key string, n int64) {
	if key != "" {
		counter(key).Add(n)
	}
}

// Get returns the work counted under key.
func Get(key string) int64 { return counter(key).Load() }

// DoneKey is where sinks count the impressions of an integration they delivered or
// dead-lettered for job, a launcher's name for one pipeline run (may be empty).
func DoneKey(job, integration string) string { return "done/" + job + "/" + integration }

// StartedKey counts under key+"#started" that a job's workers have started: past its
// submission to the runner.
func StartedKey(key string) string {
	if key == "" {
		return ""
	}
	return key + "#started"
}
