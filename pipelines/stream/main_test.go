package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/testenv"
	"github.com/outflow/outflow/transforms/encode"
)

// The stream tests run in parallel, more of them than cores: each has its own broker,
// destinations and job, and spends its time waiting for windows, timers and rate
// limits, not computing.
func TestMain(m *testing.M) {
	testenv.Parallel(6)
	testenv.Main(m)
}

const hookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// kafkaTopic is an in-process Kafka-protocol broker with a three-partition topic.
type kafkaTopic struct {
	t       *testing.T
	brokers string
	cl      *kgo.Client
}

func newTopic(t *testing.T) *kafkaTopic {
	t.Helper()
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "impressions"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &kafkaTopic{t: t, brokers: strings.Join(kafka.ListenAddrs(), ","), cl: cl}
}

// produce writes one impression per key for tenant, timed now.
func (tp *kafkaTopic) produce(tenant string, keys ...string) { tp.produceAged(0, tenant, keys...) }

// produceAged writes one impression per key for tenant, timed age ago.
func (tp *kafkaTopic) produceAged(age time.Duration, tenant string, keys ...string) {
	tp.produceAt(time.Now().Add(-age), tenant, keys...)
}

// produceAt writes one impression per key for tenant, timed at.
func (tp *kafkaTopic) produceAt(at time.Time, tenant string, keys ...string) {
	tp.produceStamped(time.Time{}, at, tenant, keys...)
}

// produceStamped writes one impression per key for tenant, timed at, in records with
// the Kafka timestamp stamp (zero: the producer's clock).
func (tp *kafkaTopic) produceStamped(stamp, at time.Time, tenant string, keys ...string) {
	var recs []*kgo.Record
	for _, k := range keys {
		line := fmt.Sprintf(`{"tenant":%q,"environmentName":"production","key":%q,"split":"s","treatment":"on","time":%d}`,
			tenant, k, at.UnixMilli())
		recs = append(recs, &kgo.Record{Topic: "impressions", Value: []byte(line), Timestamp: stamp})
	}
	if err := tp.cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		tp.t.Fatal(err)
	}
}

func keys(prefix string, from, to int) []string {
	var ks []string
	for i := from; i < to; i++ {
		ks = append(ks, fmt.Sprintf("%s-%d", prefix, i))
	}
	return ks
}

// streamJob is a stream job running as its own process.
type streamJob struct {
	config string
	cmd    *exec.Cmd
	stderr testenv.SyncBuffer
	exited chan struct{}
}

// startJob writes the integrations into a config and starts the stream job on tp.
func startJob(t *testing.T, tp *kafkaTopic, integrations string) *streamJob {
	t.Helper()
	return startConfig(t, tp, writeConfig(t, integrations))
}

// writeConfig writes the integrations into a config and returns its path.
func writeConfig(t *testing.T, integrations string) string {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "outflow.yaml")
	cfg := fmt.Sprintf("dead_letter: %s\nallow_private_destinations: true\nintegrations:\n%s", filepath.Join(dir, "dead"), integrations)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfgPath
}

// startConfig starts the stream job on tp with the config at cfgPath, and flags.
func startConfig(t *testing.T, tp *kafkaTopic, cfgPath string, flags ...string) *streamJob {
	t.Helper()
	return startConfigEnv(t, tp, cfgPath, nil, flags...)
}

// startConfigEnv is startConfig with more environment variables, KEY=VALUE.
func startConfigEnv(t *testing.T, tp *kafkaTopic, cfgPath string, env []string, flags ...string) *streamJob {
	t.Helper()
	bin := testenv.Build(t, "./pipelines/stream")
	args := append([]string{"--config", cfgPath, "--brokers", tp.brokers, "--topic", "impressions",
		"--report", filepath.Join(filepath.Dir(cfgPath), "report.json")}, flags...)
	j := &streamJob{config: cfgPath, cmd: exec.Command(bin, args...)}
	j.cmd.Env = append(os.Environ(), env...)
	j.cmd.Stderr = &j.stderr
	if err := j.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	j.exited = make(chan struct{})
	go func() { j.cmd.Wait(); close(j.exited) }()
	t.Cleanup(func() { j.cmd.Process.Kill(); <-j.exited })
	return j
}

// stop ends the job with SIGINT and returns its exit code.
func (j *streamJob) stop() int {
	j.cmd.Process.Signal(syscall.SIGINT)
	<-j.exited
	return j.cmd.ProcessState.ExitCode()
}

// waitFor waits until s holds want unique impressions.
func waitFor(t *testing.T, j *streamJob, s *destsim.Server, want int) {
	t.Helper()
	waitForWithin(t, j, s, want, 90*time.Second)
}

// waitForWithin waits at most limit until s holds want unique impressions.
func waitForWithin(t *testing.T, j *streamJob, s *destsim.Server, want int, limit time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(limit); s.Status().UniqueEvents < want; {
		select {
		case <-j.exited:
			t.Fatalf("the job ended (exit code %d) before %s got %d of %d impressions\n%s",
				j.cmd.ProcessState.ExitCode(), s.URL(), s.Status().UniqueEvents, want, j.stderr.String())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s got %d of %d impressions\n%s", s.URL(), s.Status().UniqueEvents, want, j.stderr.String())
		}
	}
}

// webhook starts a webhook simulator for tenant and returns it with its integration's
// config line; extra is more of the integration's YAML fields.
func webhook(t *testing.T, tenant string, o destsim.Options, extra string) (*destsim.Server, string) {
	o.Kind, o.Secret, o.Tenant, o.RetryAfterGrace = destsim.Webhook, hookSecret, tenant, 100*time.Millisecond
	s := testenv.Destination(t, o)
	return s, fmt.Sprintf("  - {id: %s-hook, tenant: %s, type: webhook, window: 2s, webhook: {url: %q, secret: %q}%s}\n",
		tenant, tenant, s.URL()+"/h", hookSecret, extra)
}

// Impressions produced for two tenants before and while the job runs reach each
// tenant's destination exactly once, windows closed by the watermark, late ones too
// (their window long closed, or older than the allowed lateness); SIGINT ends the job
// with exit 0.
func TestStreamToHTTP(t *testing.T) {
	t.Parallel()
	tp := newTopic(t)
	hook, hookCfg := webhook(t, "acme", destsim.Options{}, "")
	amp := testenv.Destination(t, destsim.Options{Kind: destsim.Amplitude, APIKey: "k"})
	tp.produce("acme", keys("a", 0, 50)...)
	tp.produce("globex", keys("g", 0, 50)...)
	j := startJob(t, tp, hookCfg+fmt.Sprintf("  - {id: globex-amp, tenant: globex, type: amplitude, window: 2s, amplitude: {api_key: k, endpoint: %q}}\n", amp.URL()))
	time.Sleep(2 * time.Second)
	tp.produce("acme", keys("a", 50, 100)...)
	tp.produce("globex", keys("g", 50, 100)...)
	waitFor(t, j, hook, 100)
	// The watermark has passed their windows by now: late, and later than the allowed
	// lateness.
	tp.produceAged(10*time.Minute, "acme", keys("late", 0, 10)...)
	tp.produceAged(3*time.Hour, "acme", keys("very-late", 0, 10)...)

	waitFor(t, j, hook, 120)
	waitFor(t, j, amp, 100)
	if code := j.stop(); code != 0 {
		t.Errorf("exit code %d after SIGINT\n%s", code, j.stderr.String())
	}
	for s, want := range map[*destsim.Server]int{hook: 120, amp: 100} {
		if st := s.Status(); st.UniqueEvents != want || st.Duplicates != 0 {
			t.Errorf("%s: %d unique, %d duplicates; want %d, 0", st.Kind, st.UniqueEvents, st.Duplicates, want)
		}
	}
}

// Object stores in a stream: each window's impressions land in an object once the
// watermark closes it, and late impressions for a window already written land in an
// extra object of that window, named apart; every impression is held exactly once,
// even when copies of it arrive late. A webhook beside it is sent nothing twice.
func TestStreamToObjects(t *testing.T) {
	t.Parallel()
	tp := newTopic(t)
	s3, bucket, s3Cfg := acmeS3(t)
	hook, hookCfg := webhook(t, "globex", destsim.Options{}, "")
	j := startJob(t, tp, hookCfg+s3Cfg)
	at := time.Now()
	tp.produceAt(at, "acme", keys("a", 0, 30)...)
	tp.produceAt(at, "globex", keys("g", 0, 30)...)
	held := func(want int) map[string][]string { // object key -> impression keys, once want are held
		t.Helper()
		for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(300 * time.Millisecond) {
			objs, n := map[string][]string{}, 0
			for key, body := range s3.DataObjects(t, bucket, "acme/") {
				recs, err := encode.ReadObject(bytes.NewReader(body), encode.NDJSON)
				if err != nil {
					t.Fatalf("%s: %v", key, err)
				}
				for _, r := range recs {
					objs[key] = append(objs[key], r.Key)
				}
				n += len(recs)
			}
			if n >= want {
				return objs
			}
			select {
			case <-j.exited:
				t.Fatalf("the job ended (exit code %d) with %d of %d impressions stored\n%s", j.cmd.ProcessState.ExitCode(), n, want, j.stderr.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d impressions stored\n%s", n, want, j.stderr.String())
			}
		}
	}
	onTime := held(30)
	waitFor(t, j, hook, 30)
	// The watermark has passed the window: these are late for it. Copies of
	// impressions it already delivered come with them; they are dropped.
	tp.produceAt(at, "acme", append(keys("late", 0, 10), keys("a", 0, 5)...)...)
	tp.produceAt(at, "globex", append(keys("g-late", 0, 10), keys("g", 0, 5)...)...)
	objs := held(40)
	waitFor(t, j, hook, 40)
	time.Sleep(3 * time.Second) // time for a copy to arrive, if one were sent
	stopDelivered(t, j, hook, 40)

	seen := map[string]int{}
	for key, ks := range objs {
		for _, k := range ks {
			seen[k]++
		}
		if _, ok := onTime[key]; !ok {
			if !slices.ContainsFunc(ks, func(k string) bool { return strings.HasPrefix(k, "late-") }) {
				t.Errorf("a new object %s holds no late impression: %v", key, ks)
			}
		}
	}
	for _, k := range append(keys("a", 0, 30), keys("late", 0, 10)...) {
		if seen[k] != 1 {
			t.Errorf("impression %s is held %d times", k, seen[k])
		}
	}
	if len(objs) <= len(onTime) {
		t.Errorf("late impressions did not get an object of their own: %d objects before, %d after", len(onTime), len(objs))
	}
	for key := range onTime {
		if !slices.Equal(onTime[key], objs[key]) {
			t.Errorf("%s was rewritten: %v, then %v", key, onTime[key], objs[key])
		}
	}
}

// SIGINT drains the job: what it read is delivered before it exits 0, its report
// counts it, and the group's offsets are committed where reading stopped. Started
// again, the job resumes there: it delivers what was produced while it was down, and
// nothing is lost or sent twice.
func TestStreamRestartResumes(t *testing.T) {
	t.Parallel()
	tp := newTopic(t)
	hook, hookCfg := webhook(t, "acme", destsim.Options{}, "")
	tp.produce("acme", keys("a", 0, 50)...)
	j := startJob(t, tp, hookCfg)
	waitFor(t, j, hook, 50)
	tp.produce("acme", keys("a", 50, 100)...) // the job may stop before reading all
	if code := j.stop(); code != 0 {
		t.Fatalf("exit code %d after SIGINT\n%s", code, j.stderr.String())
	}
	first := hook.Status().UniqueEvents
	var rep struct {
		Integrations []struct{ Impressions, Delivered int }
	}
	data, err := os.ReadFile(filepath.Join(filepath.Dir(j.config), "report.json"))
	if err == nil {
		err = json.Unmarshal(data, &rep)
	}
	if err != nil || len(rep.Integrations) != 1 || rep.Integrations[0].Delivered != first || rep.Integrations[0].Impressions != first {
		t.Errorf("report after SIGINT: %s (err %v); want %d impressions delivered", data, err, first)
	}
	// Drained, every record read is finished and committed: at least those delivered
	// (one impression per record).
	var next int64
	for _, o := range tp.committed() {
		next += o
	}
	if next < int64(first) {
		t.Errorf("after draining, offsets committed past %d records; %d were delivered\n%s", next, first, j.stderr.String())
	}

	tp.produce("acme", keys("a", 100, 150)...) // while it is down
	j = startConfig(t, tp, j.config)
	waitFor(t, j, hook, 150)
	tp.produce("acme", keys("a", 150, 200)...)
	waitFor(t, j, hook, 200)
	if code := j.stop(); code != 0 {
		t.Errorf("exit code %d after SIGINT\n%s", code, j.stderr.String())
	}
	if st := hook.Status(); st.UniqueEvents != 200 || st.Duplicates != 0 {
		t.Errorf("%d unique impressions, %d sent again; want 200, 0 (the first run delivered %d)", st.UniqueEvents, st.Duplicates, first)
	}
}

// A drain that outlasts --shutdown-timeout is cut short: the job still exits 0, and
// commits nothing past what its throttled destination has not received, which the
// next run delivers.
func TestStreamShutdownTimeout(t *testing.T) {
	t.Parallel()
	tp := newTopic(t)
	slow, slowCfg := webhook(t, "acme", destsim.Options{RateLimit: 0.5, Burst: 1}, ", shards: 1, delivery: {max_batch_events: 10}")
	tp.produce("acme", keys("a", 0, 50)...)
	cfgPath := writeConfig(t, slowCfg)
	j := startConfig(t, tp, cfgPath, "--shutdown-timeout", "1s")
	waitFor(t, j, slow, 1)
	stopped := time.Now()
	if code := j.stop(); code != 0 {
		t.Errorf("exit code %d after SIGINT\n%s", code, j.stderr.String())
	}
	if took := time.Since(stopped); took > 20*time.Second {
		t.Errorf("the job took %v to stop with --shutdown-timeout 1s", took)
	}
	if !strings.Contains(j.stderr.String(), "--shutdown-timeout 1s passed") {
		t.Errorf("no word of the shutdown timeout\n%s", j.stderr.String())
	}
	if slow.Status().UniqueEvents == 50 {
		t.Fatal("everything was delivered before the timeout: the test proves nothing")
	}
	if tp.committedAll() {
		t.Error("offsets committed past impressions the destination has not received")
	}
	j = startConfig(t, tp, cfgPath)
	waitFor(t, j, slow, 50)
	if code := j.stop(); code != 0 {
		t.Errorf("exit code %d after SIGINT\n%s", code, j.stderr.String())
	}
}

// While it runs, the job commits the group's offsets once what was read is finished,
// and writes dead letters: killed (no drain), it restarts from its last commit and
// sends nothing twice.
func TestStreamKilledResumesFromCommits(t *testing.T) {
	t.Parallel()
	tp := newTopic(t)
	hook, hookCfg := webhook(t, "acme", destsim.Options{}, "")
	tp.produce("acme", keys("a", 0, 50)...)
	tp.produceInvalid(1)
	j := startJob(t, tp, hookCfg)
	waitFor(t, j, hook, 50)
	invalid := filepath.Join(filepath.Dir(j.config), "dead", "invalid")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		files, _ := filepath.Glob(filepath.Join(invalid, "*.ndjson"))
		if len(files) > 0 && tp.committedAll() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s: dead-letter files %v; offsets committed to the end: %v\n%s", files, tp.committedAll(), j.stderr.String())
		}
	}
	// The report is rewritten while the job runs.
	reportPath := filepath.Join(filepath.Dir(j.config), "report.json")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		var rep struct {
			Running      bool
			InvalidLines int64 `json:"invalid_lines"`
			Integrations []struct{ Delivered int }
		}
		data, err := os.ReadFile(reportPath)
		if err == nil && json.Unmarshal(data, &rep) == nil && rep.Running && rep.InvalidLines == 1 &&
			len(rep.Integrations) == 1 && rep.Integrations[0].Delivered == 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s, the running job's report: %s (%v); want running, 1 invalid line, 50 delivered", data, err)
		}
	}
	j.cmd.Process.Kill()
	<-j.exited

	j = startConfig(t, tp, j.config)
	tp.produce("acme", keys("a", 50, 100)...)
	waitFor(t, j, hook, 100)
	stopDelivered(t, j, hook, 100)
}

// waitCommitted waits until group outflow has committed every partition of tp to its
// end, for at most 60 s.
func waitCommitted(t *testing.T, j *streamJob, tp *kafkaTopic) {
	t.Helper()
	waitCommittedWithin(t, j, tp, 60*time.Second)
}

// waitCommittedWithin waits at most limit until group outflow has committed every
// partition to its end.
func waitCommittedWithin(t *testing.T, j *streamJob, tp *kafkaTopic, limit time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(limit); !tp.committedAll(); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v, the group has not committed every partition to its end: %v\n%s", limit, tp.committed(), j.stderr.String())
		}
	}
}

// committedAll says whether group outflow has committed every partition to its end.
func (tp *kafkaTopic) committedAll() bool {
	adm := kadm.NewClient(tp.cl)
	ctx := context.Background()
	ends, err := adm.ListEndOffsets(ctx, "impressions")
	if err != nil {
		tp.t.Fatal(err)
	}
	committed, err := adm.FetchOffsetsForTopics(ctx, "outflow", "impressions")
	if err != nil {
		return false
	}
	all := true
	ends.Each(func(o kadm.ListedOffset) {
		c, ok := committed.Lookup("impressions", o.Partition)
		all = all && ok && c.At == o.Offset
	})
	return all
}

// One destination throttled hard (a request every 3 s, Retry-After) while impressions
// stream in for 20 s: the other tenants' impressions still arrive within their 2 s
// window and a few seconds, and the throttled one loses nothing and is sent nothing
// before its Retry-After.
func TestThrottledDestinationDelaysNobody(t *testing.T) {
	t.Parallel()
	tp := newTopic(t)
	slow, slowCfg := webhook(t, "slow", destsim.Options{RateLimit: 0.3, Burst: 1}, ", shards: 1, alert_delay: 3s")
	a, aCfg := webhook(t, "acme", destsim.Options{}, ", alert_delay: 12s")
	g, gCfg := webhook(t, "globex", destsim.Options{}, ", alert_delay: 12s")
	j := startJob(t, tp, slowCfg+aCfg+gCfg)
	const rounds, perRound = 40, 5
	for i := range rounds {
		for _, tenant := range []string{"slow", "acme", "globex"} {
			tp.produce(tenant, keys(tenant, i*perRound, (i+1)*perRound)...)
		}
		time.Sleep(500 * time.Millisecond)
	}
	waitFor(t, j, a, rounds*perRound)
	waitFor(t, j, g, rounds*perRound)
	if st := slow.Status(); st.Throttled == 0 || st.UniqueEvents == rounds*perRound {
		t.Fatalf("the slow destination was not held back (%d throttled, %d of %d delivered): the test proves nothing",
			st.Throttled, st.UniqueEvents, rounds*perRound)
	}
	// Its impressions are still in flight, so their records are not committed, and
	// the running job's report shows them buffered.
	if tp.committedAll() && slow.Status().UniqueEvents < rounds*perRound {
		t.Errorf("offsets committed past records whose impressions the throttled destination has not received")
	}
	var rep struct {
		Integrations []struct {
			ID      string
			Pending int
		}
	}
	data, err := os.ReadFile(filepath.Join(filepath.Dir(j.config), "report.json"))
	if err == nil {
		err = json.Unmarshal(data, &rep)
	}
	if err != nil || len(rep.Integrations) != 3 || rep.Integrations[0].ID != "slow-hook" || rep.Integrations[0].Pending == 0 {
		t.Errorf("the running report shows nothing buffered for the throttled destination: %s (%v)", data, err)
	}
	for _, s := range []*destsim.Server{a, g} {
		delays := delaysOf(t, s)
		p50, worst := delays[len(delays)/2], delays[len(delays)-1]
		t.Logf("%s: delivery delay p50 %v, max %v (window 2s)", s.URL(), p50, worst)
		// Contract: by window end + 30 s. Healthy neighbours of a throttled destination
		// should see far less; the bound leaves room for a busy machine.
		if worst > 2*time.Second+15*time.Second {
			t.Errorf("%s: an impression took %v to arrive beside a throttled destination", s.URL(), worst)
		}
	}
	waitFor(t, j, slow, rounds*perRound)
	delays := delaysOf(t, slow)
	t.Logf("throttled: delivery delay p50 %v, max %v", delays[len(delays)/2], delays[len(delays)-1])
	if code := j.stop(); code != 0 {
		t.Errorf("exit code %d after SIGINT\n%s", code, j.stderr.String())
	}
	for _, s := range []*destsim.Server{slow, a, g} {
		if st := s.Status(); st.Duplicates != 0 || st.IgnoredRetryAfter != 0 {
			t.Errorf("%s: %d duplicates, %d requests before Retry-After", s.URL(), st.Duplicates, st.IgnoredRetryAfter)
		}
	}
	// The throttled destination's impressions arrive long after its alert_delay: the
	// job says so at ERROR, naming it.
	alerts := 0
	for _, line := range strings.Split(j.stderr.String(), "\n") {
		if strings.Contains(line, "level=ERROR") && strings.Contains(line, "delivery delay above the alert threshold") {
			if !strings.Contains(line, "integration=slow-hook") {
				t.Logf("alert for a healthy destination (a busy machine?): %s", line)
				continue
			}
			alerts++
		}
	}
	if alerts == 0 {
		t.Errorf("no delay alert for the throttled destination\n%s", j.stderr.String())
	}
}

// delaysOf returns, sorted, how long each impression s accepted took from its time to
// its arrival.
func delaysOf(t *testing.T, s *destsim.Server) []time.Duration {
	var ds []time.Duration
	for _, e := range s.Events() {
		var rec struct {
			Time int64 `json:"time"`
		}
		if err := json.Unmarshal(e.Body, &rec); err != nil || rec.Time == 0 {
			t.Fatalf("event without a time: %s", e.Body)
		}
		ds = append(ds, e.First.Sub(time.UnixMilli(rec.Time)))
	}
	slices.Sort(ds)
	return ds
}

// produceTo writes one impression per key for tenant, timed now, to partition.
func (tp *kafkaTopic) produceTo(partition int32, tenant string, keys ...string) {
	tp.t.Helper()
	// A client of its own: it learns of partitions added since tp.cl started.
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(tp.brokers, ",")...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		tp.t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for _, k := range keys {
		line := fmt.Sprintf(`{"tenant":%q,"environmentName":"production","key":%q,"split":"s","treatment":"on","time":%d}`,
			tenant, k, time.Now().UnixMilli())
		recs = append(recs, &kgo.Record{Topic: "impressions", Partition: partition, Value: []byte(line)})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		tp.t.Fatal(err)
	}
}

// committed returns group outflow's committed offsets by partition.
func (tp *kafkaTopic) committed() map[int32]int64 {
	tp.t.Helper()
	out := map[int32]int64{}
	offs, err := kadm.NewClient(tp.cl).FetchOffsetsForTopics(context.Background(), "outflow", "impressions")
	if errors.Is(err, kerr.GroupIDNotFound) {
		return out // nothing committed yet
	}
	if err != nil {
		tp.t.Fatal(err)
	}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Err == nil && o.At >= 0 {
			out[o.Partition] = o.At
		}
	})
	return out
}

// With --start latest, every partition's starting offset is committed when the job
// starts: a partition that receives nothing during a run is resumed from there, so
// what is produced to it while the job is down is delivered on restart, once; what
// was produced before the first start is not.
func TestStreamStartLatestCommitsEveryPartition(t *testing.T) {
	t.Parallel()
	tp := newTopic(t)
	hook, hookCfg := webhook(t, "acme", destsim.Options{}, "")
	tp.produceTo(2, "acme", keys("before", 0, 10)...) // before the first start: skipped
	cfgPath := writeConfig(t, hookCfg)
	j := startConfig(t, tp, cfgPath, "--start", "latest")
	// The job commits where it starts each partition before it reads; what is produced
	// after that is read.
	for deadline := time.Now().Add(60 * time.Second); len(tp.committed()) < 3; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no starting offsets committed: %v\n%s", tp.committed(), j.stderr.String())
		}
	}
	if c := tp.committed(); c[0] != 0 || c[1] != 0 || c[2] != 10 {
		t.Errorf("starting offsets committed %v; want partitions 0 and 1 at 0, 2 at 10 (latest)", c)
	}
	tp.produceTo(0, "acme", keys("run1", 0, 10)...)
	waitFor(t, j, hook, 10)
	if code := j.stop(); code != 0 {
		t.Fatalf("exit code %d after SIGINT\n%s", code, j.stderr.String())
	}
	if c := tp.committed(); c[0] != 10 || c[1] != 0 || c[2] != 10 {
		t.Errorf("after the first run: committed %v; want partition 0 at 10, 1 at 0, 2 at 10", c)
	}

	tp.produceTo(2, "acme", keys("down", 0, 20)...) // while it is down
	tp.produceTo(1, "acme", keys("down1", 0, 5)...)
	j = startConfig(t, tp, cfgPath, "--start", "latest")
	waitFor(t, j, hook, 35)
	time.Sleep(2 * time.Second) // time for a copy or an earlier record to arrive, if one were sent
	stopDelivered(t, j, hook, 35)
	for _, e := range hook.Events() {
		if bytes.Contains(e.Body, []byte(`"before-`)) {
			t.Errorf("an impression produced before the first start was delivered: %s", e.Body)
		}
	}
}

// A partition added to the topic while the job runs is read from its start: what is
// produced to it is delivered, once, and its offsets are committed.
func TestStreamReadsAddedPartition(t *testing.T) {
	t.Parallel()
	tp := newTopic(t)
	hook, hookCfg := webhook(t, "acme", destsim.Options{}, "")
	tp.produce("acme", keys("a", 0, 30)...)
	j := startJob(t, tp, hookCfg)
	waitFor(t, j, hook, 30)
	tp.addPartition()
	tp.produceTo(3, "acme", keys("added", 0, 20)...)
	waitFor(t, j, hook, 50)
	tp.produceTo(3, "acme", keys("added", 20, 40)...)
	tp.produce("acme", keys("a", 30, 60)...)
	waitFor(t, j, hook, 100)
	for deadline := time.Now().Add(60 * time.Second); tp.committed()[3] != 40; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the added partition's offsets: committed %v, want 40 for partition 3\n%s", tp.committed(), j.stderr.String())
		}
	}
	stopDelivered(t, j, hook, 100)
	if !strings.Contains(j.stderr.String(), "reading a partition added to the topic") {
		t.Errorf("no word of the added partition\n%s", j.stderr.String())
	}
}

// --restart-every drains the pipeline and starts a new one from the commits, while
// impressions keep arriving: each reaches the webhook once and the S3 prefix once.
func TestStreamRestartsEvery(t *testing.T) {
	t.Parallel()
	tp := newTopic(t)
	hook, hookCfg := webhook(t, "acme", destsim.Options{}, "")
	s3, bucket, s3Cfg := acmeS3(t)
	j := startConfig(t, tp, writeConfig(t, hookCfg+s3Cfg),
		"--restart-every", "10s")
	const n = 150
	for i := 0; i < n; i += 5 { // for 30 s: across at least two restarts
		tp.produce("acme", keys("a", i, i+5)...)
		time.Sleep(time.Second)
	}
	waitFor(t, j, hook, n)
	stored := waitCopies(t, j, s3, bucket, "acme/", n, 60*time.Second)
	stopDelivered(t, j, hook, n)
	if restarts := strings.Count(j.stderr.String(), "the pipeline has run for --restart-every"); restarts < 2 {
		t.Errorf("%d restarts in 30 s, want ≥ 2\n%s", restarts, j.stderr.String())
	}
	onceEach(t, stored, n)
}

// Brokers that cannot be reached, or a topic they do not have, fail the job at
// startup, before it commits or reads anything: exit 1 once --start-timeout has
// passed, naming the cause.
func TestStreamStartFailsClearly(t *testing.T) {
	t.Parallel()
	tp := newTopic(t)
	_, hookCfg := webhook(t, "acme", destsim.Options{}, "")
	cfgPath := writeConfig(t, hookCfg)
	bin := testenv.Build(t, "./pipelines/stream")
	const startTimeout = 5 * time.Second
	for _, c := range []struct{ brokers, topic, want string }{
		{"127.0.0.1:1", "impressions", "dial tcp 127.0.0.1:1"},
		{tp.brokers, "nope", `kafka topic "nope"`},
	} {
		var stderr bytes.Buffer
		cmd := exec.Command(bin, "--config", cfgPath, "--brokers", c.brokers, "--topic", c.topic, "--start", "latest",
			"--start-timeout", startTimeout.String())
		cmd.Stderr = &stderr
		started := time.Now()
		err := cmd.Run()
		took := time.Since(started)
		if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(stderr.String(), "stream: starting offsets: ") ||
			!strings.Contains(stderr.String(), c.want) || !strings.Contains(stderr.String(), "gave up after --start-timeout 5s") {
			t.Errorf("brokers %s, topic %s: exit code %d (%v); want 1, with %q and the timeout\n%s", c.brokers, c.topic, code, err, c.want, stderr.String())
		}
		t.Logf("brokers %s, topic %s: %s", c.brokers, c.topic, strings.TrimSpace(stderr.String()))
		// It keeps trying for the whole timeout (brokers may start with the job), and
		// then gives up; the slack is for a loaded machine.
		if took < startTimeout || took > startTimeout+30*time.Second {
			t.Errorf("brokers %s, topic %s: took %v to fail with --start-timeout %v", c.brokers, c.topic, took, startTimeout)
		}
	}
	if c := tp.committed(); len(c) != 0 {
		t.Errorf("offsets committed for another topic's run: %v", c)
	}
}

// Bad flags are exit 2 before anything is reached, each named.
func TestStreamBadFlags(t *testing.T) {
	t.Parallel()
	_, hookCfg := webhook(t, "acme", destsim.Options{}, "")
	cfgPath := writeConfig(t, hookCfg)
	bin := testenv.Build(t, "./pipelines/stream")
	for _, c := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--start", "middle"}, `--start: "middle"`},
		{[]string{"--isolation", "dirty"}, `--isolation: "dirty"`},
		{[]string{"--offset-out-of-range", "skip"}, `--offset-out-of-range: "skip"`},
		{[]string{"--shutdown-timeout", "0s"}, "--shutdown-timeout must be positive"},
		{[]string{"--restart-every", "1s"}, "--restart-every must be 0 (never) or at least 10s, not 1s"},
		{[]string{"--restart-every", "-1h"}, "--restart-every must be 0 (never) or at least 10s, not -1h0m0s"},
	} {
		var stderr bytes.Buffer
		cmd := exec.Command(bin, append([]string{"--config", cfgPath, "--brokers", "127.0.0.1:1", "--topic", "impressions"}, c.flags...)...)
		cmd.Stderr = &stderr
		cmd.Run()
		if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d; want 2 saying %q\n%s", c.flags, code, c.want, stderr.String())
		}
	}
}

// addPartition adds a partition to the topic: number 3, the first time.
func (tp *kafkaTopic) addPartition() {
	tp.t.Helper()
	resp, err := kadm.NewClient(tp.cl).CreatePartitions(context.Background(), 1, "impressions")
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		tp.t.Fatal(err)
	}
}

// acmeS3 starts an S3 API server with a bucket for the test, and returns them and
// the config line of integration acme-s3: tenant acme's impressions in 2 s windows
// under prefix acme/.
func acmeS3(t *testing.T) (s3 *testenv.S3, bucket, cfg string) {
	t.Helper()
	s3 = testenv.NewS3(t)
	bucket = s3.Bucket(t)
	return s3, bucket, fmt.Sprintf("  - {id: acme-s3, tenant: acme, type: s3, window: 2s, s3: {bucket: %s, prefix: acme, endpoint: %s}}\n",
		bucket, s3.Endpoint)
}

// waitCopies waits at most limit until want impressions are stored under prefix, and
// returns copies then; it fails if the job ends first.
func waitCopies(t *testing.T, j *streamJob, s3 *testenv.S3, bucket, prefix string, want int, limit time.Duration) map[string]int {
	t.Helper()
	for deadline := time.Now().Add(limit); ; time.Sleep(200 * time.Millisecond) {
		held := copies(t, s3, bucket, prefix)
		if len(held) >= want {
			return held
		}
		select {
		case <-j.exited:
			t.Fatalf("the job ended (exit code %d) with %d of %d impressions stored\n%s", j.cmd.ProcessState.ExitCode(), len(held), want, j.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d impressions stored\n%s", len(held), want, j.stderr.String())
		}
	}
}

// onceEach fails unless held (copies) has want impressions, each in one object.
func onceEach(t *testing.T, held map[string]int, want int) {
	t.Helper()
	if len(held) != want {
		t.Errorf("%d of %d impressions stored", len(held), want)
	}
	for k, n := range held {
		if n != 1 {
			t.Errorf("impression %s is in %d objects", k, n)
		}
	}
}

// produceInvalid writes n records that hold no impression.
func (tp *kafkaTopic) produceInvalid(n int) {
	tp.t.Helper()
	for range n {
		if err := tp.cl.ProduceSync(context.Background(), &kgo.Record{Topic: "impressions", Value: []byte("not an impression")}).FirstErr(); err != nil {
			tp.t.Fatal(err)
		}
	}
}

// copies returns, for each impression stored under prefix, how many NDJSON objects
// hold it.
func copies(t *testing.T, s3 *testenv.S3, bucket, prefix string) map[string]int {
	t.Helper()
	held := map[string]int{}
	for key, body := range s3.DataObjects(t, bucket, prefix) {
		recs, err := encode.ReadObject(bytes.NewReader(body), encode.NDJSON)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		for _, r := range recs {
			held[r.Key]++
		}
	}
	return held
}

// stopDelivered stops j with SIGINT, and fails unless it exits 0 and s holds want
// impressions, none sent twice.
func stopDelivered(t *testing.T, j *streamJob, s *destsim.Server, want int) {
	t.Helper()
	if code := j.stop(); code != 0 {
		t.Errorf("exit %d after SIGINT\n%s", code, j.stderr.String())
	}
	if st := s.Status(); st.UniqueEvents != want || st.Duplicates != 0 {
		t.Errorf("%s: %d unique impressions, %d sent again; want %d, 0", s.URL(), st.UniqueEvents, st.Duplicates, want)
	}
}
