package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const hookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// Impressions produced for two tenants reach each tenant's destination exactly once
// while the job runs, windows closed by the watermark; SIGINT ends it with exit 0.
func TestStreamToHTTP(t *testing.T) {
	bin := testenv.Build(t, "./pipelines/stream")
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "impressions"))
	if err != nil {
		t.Fatal(err)
	}
	defer kafka.Close()
	hook := testenv.Destination(t, destsim.Options{Kind: destsim.Webhook, Secret: hookSecret, Tenant: "acme"})
	amp := testenv.Destination(t, destsim.Options{Kind: destsim.Amplitude, APIKey: "k"})
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "outflow.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
dead_letter: %s
allow_private_destinations: true
integrations:
  - {id: acme-hook, tenant: acme, type: webhook, window: 2s, webhook: {url: %q, secret: %q}}
  - {id: globex-amp, tenant: globex, type: amplitude, window: 2s, amplitude: {api_key: k, endpoint: %q}}
`, filepath.Join(dir, "dead"), hook.URL()+"/h", hookSecret, amp.URL())), 0o644)

	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	produce := func(from, n int) {
		var recs []*kgo.Record
		for i := from; i < from+n; i++ {
			tenant := []string{"acme", "globex"}[i%2]
			line := fmt.Sprintf(`{"tenant":%q,"environmentName":"production","key":"user-%d","split":"s","treatment":"on","time":%d}`,
				tenant, i, time.Now().UnixMilli())
			recs = append(recs, &kgo.Record{Topic: "impressions", Value: []byte(line)})
		}
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	produce(0, 100) // before the job starts

	reportPath := filepath.Join(dir, "report.json")
	cmd := exec.Command(bin, "--config", cfgPath, "--brokers", strings.Join(kafka.ListenAddrs(), ","),
		"--topic", "impressions", "--report", reportPath)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	time.Sleep(2 * time.Second)
	produce(100, 100) // while it runs

	waitFor := func(s *destsim.Server, want int) {
		for deadline := time.Now().Add(90 * time.Second); s.Status().UniqueEvents < want; {
			if time.Now().After(deadline) {
				t.Fatalf("%s got %d of %d impressions\n%s", s.Status().Kind, s.Status().UniqueEvents, want, stderr.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitFor(hook, 100)
	waitFor(amp, 100)
	cmd.Process.Signal(syscall.SIGINT)
	err = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d after SIGINT (%v)\n%s", code, err, stderr.String())
	}
	for _, s := range []*destsim.Server{hook, amp} {
		if st := s.Status(); st.UniqueEvents != 100 || st.Duplicates != 0 {
			t.Errorf("%s: %d unique, %d duplicates; want 100, 0", st.Kind, st.UniqueEvents, st.Duplicates)
		}
	}
}
