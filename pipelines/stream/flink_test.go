package main

import (
	"testing"
	"time"

	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/testenv"
)

// The stream on Beam's portable Flink runner (streaming mode, the workers in the
// launcher): impressions reach the webhook once, the group commits every partition
// to its end, and SIGINT drains the job to exit 0. How long each takes is logged:
// on Flink, far longer than on prism (issue 24).
func TestStreamToHTTPOnFlink(t *testing.T) {
	t.Parallel()
	endpoint := testenv.FlinkJobServer(t)
	tp := newTopic(t)
	hook, hookCfg := webhook(t, "acme", destsim.Options{}, "")
	j := startConfig(t, tp, writeConfig(t, hookCfg), "--runner=flink", "--endpoint="+endpoint, "--environment_type=LOOPBACK")
	start := time.Now()
	tp.produce("acme", keys("a", 0, 30)...)
	waitFor(t, j, hook, 30)
	t.Logf("first 30 after %v", time.Since(start))
	tp.produce("acme", keys("b", 0, 30)...)
	waitFor(t, j, hook, 60)
	waitCommitted(t, j, tp)
	t.Logf("committed after %v", time.Since(start))
	if code := j.stop(); code != 0 {
		t.Errorf("exit %d after SIGINT\n%s", code, j.stderr.String())
	}
	t.Logf("stopped after %v", time.Since(start))
	if st := hook.Status(); st.UniqueEvents != 60 || st.Duplicates != 0 {
		t.Errorf("webhook: %d unique, %d sent again; want 60, 0", st.UniqueEvents, st.Duplicates)
	}
}
