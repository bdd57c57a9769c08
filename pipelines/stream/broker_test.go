package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/testenv"
	"github.com/outflow/outflow/io/kafkaio"
)

// topicOn creates the three-partition topic "impressions" on a real broker, reached
// at brokers with sec.
func topicOn(t *testing.T, brokers string, sec kafkaio.Security) *kafkaTopic {
	t.Helper()
	opts := append([]kgo.Opt{kgo.SeedBrokers(brokers), kgo.RecordPartitioner(kgo.RoundRobinPartitioner())}, sec.ClientOpts()...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, 3, 1, nil, "impressions")
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create the topic on %s: %v", brokers, err)
	}
	return &kafkaTopic{t: t, brokers: brokers, cl: cl}
}

// The stream against a real Kafka broker over SASL_SSL (TLS with the broker's own
// certificate, SCRAM-SHA-512), as managed Kafka services require: every impression
// reaches the webhook once, the group's offsets reach the end of every partition, and
// SIGINT ends the job with exit 0. The password comes from the environment, and
// never shows in the job's output. A wrong password, or a broker certificate the job
// does not trust, fails at start: /readyz says why while the job tries, then exit 1,
// saying why. A client certificate (--kafka-cert, --kafka-key) reaches the broker's
// listener that asks for one.
func TestStreamFromKafkaOverSASLSSL(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t)
	ca, err := os.ReadFile(k.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	tp := topicOn(t, k.SASLSSL, kafkaio.Security{TLS: true, CAPEM: string(ca), SASL: "scram-sha-512", User: k.User, Password: k.Pass})
	hook, hookCfg := webhook(t, "acme", destsim.Options{}, "")
	cfgPath := writeConfig(t, hookCfg)
	flags := []string{"--kafka-ca", k.CAFile, "--kafka-sasl", "scram-sha-512", "--kafka-user", k.User}

	for _, c := range []struct {
		name, password, want string
		flags                []string
	}{
		{"a wrong password", "not-it", "authentication", flags},
		{"an untrusted broker certificate", k.Pass, "certificate", []string{"--kafka-tls", "--kafka-sasl", "scram-sha-512", "--kafka-user", k.User}},
	} {
		addr := testenv.FreeAddr(t)
		j := startConfigEnv(t, tp, cfgPath, []string{"OUTFLOW_KAFKA_PASSWORD=" + c.password},
			append(c.flags, "--start-timeout", "5s", "--metrics-addr", addr)...)
		failsAtStart(t, c.name, j, addr, c.want)
		if strings.Contains(j.stderr.String(), "not-it") {
			t.Errorf("%s: the job printed the password\n%s", c.name, j.stderr.String())
		}
	}

	// The listener that takes client certificates.
	addr := testenv.FreeAddr(t)
	mtls := startConfig(t, &kafkaTopic{t: t, brokers: k.SSL}, cfgPath,
		"--kafka-ca", k.CAFile, "--kafka-cert", k.ClientCert, "--kafka-key", k.ClientKey, "--metrics-addr", addr)
	waitReady(t, mtls, addr)
	if code := mtls.stop(); code != 0 {
		t.Errorf("with a client certificate: exit %d after SIGINT\n%s", code, mtls.stderr.String())
	}

	j := startConfigEnv(t, tp, cfgPath, []string{"OUTFLOW_KAFKA_PASSWORD=" + k.Pass}, flags...)
	tp.produce("acme", keys("a", 0, 60)...)
	waitFor(t, j, hook, 60)
	waitCommitted(t, j, tp)
	stopDelivered(t, j, hook, 60)
	if strings.Contains(j.stderr.String(), k.Pass) {
		t.Errorf("the job printed the password\n%s", j.stderr.String())
	}
}

// failsAtStart waits for a job that cannot start: /readyz (at addr) answers 503
// saying want while it tries, and it exits 1 saying want.
func failsAtStart(t *testing.T, name string, j *streamJob, addr, want string) {
	t.Helper()
	said := false
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if code, body := testenv.Get(addr, "/readyz"); code == 503 && strings.Contains(strings.ToLower(body), want) {
			said = true
		}
		select {
		case <-j.exited:
		default:
			if time.Now().After(deadline) {
				t.Fatalf("%s: the job still runs after 60 s\n%s", name, j.stderr.String())
			}
			continue
		}
		break
	}
	if code := j.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(strings.ToLower(j.stderr.String()), want) {
		t.Errorf("%s: exit %d, want 1 saying %q\n%s", name, code, want, j.stderr.String())
	}
	if !said {
		t.Errorf("%s: /readyz never answered 503 saying %q while the job tried to start", name, want)
	}
}

// waitReady waits until the job's /readyz (at addr) answers 200.
func waitReady(t *testing.T, j *streamJob, addr string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		code, body := testenv.Get(addr, "/readyz")
		if code == 200 {
			return
		}
		select {
		case <-j.exited:
			t.Fatalf("the job ended (exit %d) before it was ready\n%s", j.cmd.ProcessState.ExitCode(), j.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %q after 60 s\n%s", code, body, j.stderr.String())
		}
	}
}

// A real broker killed and restarted while the stream runs: the group's offsets
// survive, the stream goes on without a restart of its own, a partition added after
// the restart is read, and every impression reaches the webhook once.
func TestStreamThroughBrokerRestart(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t)
	tp := topicOn(t, k.Plain, kafkaio.Security{})
	hook, hookCfg := webhook(t, "acme", destsim.Options{}, "")
	j := startConfig(t, tp, writeConfig(t, hookCfg))
	tp.produce("acme", keys("a", 0, 30)...)
	waitFor(t, j, hook, 30)
	waitCommitted(t, j, tp)
	before := tp.committed()

	k.Restart(t)
	if after := tp.committed(); !maps.Equal(after, before) {
		t.Fatalf("committed offsets %v before the broker restarted, %v after", before, after)
	}
	tp.produce("acme", keys("b", 0, 30)...)
	waitFor(t, j, hook, 60)
	tp.addPartition()
	tp.produceTo(3, "acme", keys("added", 0, 20)...)
	waitFor(t, j, hook, 80)
	waitCommitted(t, j, tp)
	stopDelivered(t, j, hook, 80)
}

// Transactions on a real broker: the records of an aborted transaction are never
// delivered (read_committed, the default), and the group's offsets pass the
// transactions' markers to the end of every partition. With --isolation
// read_uncommitted they are delivered too.
func TestStreamReadsCommittedTransactions(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t)
	tp := topicOn(t, k.Plain, kafkaio.Security{})
	tx, err := kgo.NewClient(kgo.SeedBrokers(k.Plain), kgo.TransactionalID("outflow-test"),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	ctx := context.Background()
	for _, c := range []struct {
		prefix string
		commit bool
	}{{"first", true}, {"aborted", false}, {"second", true}} {
		if err := tx.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, key := range keys(c.prefix, 0, 15) {
			line := fmt.Sprintf(`{"tenant":"acme","environmentName":"production","key":%q,"split":"s","treatment":"on","time":%d}`,
				key, time.Now().UnixMilli())
			if err := tx.ProduceSync(ctx, &kgo.Record{Topic: "impressions", Value: []byte(line)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.EndTransaction(ctx, kgo.TransactionEndTry(c.commit)); err != nil {
			t.Fatal(err)
		}
	}

	hook, hookCfg := webhook(t, "acme", destsim.Options{}, "")
	j := startConfig(t, tp, writeConfig(t, hookCfg))
	waitFor(t, j, hook, 30)
	waitCommitted(t, j, tp) // past the markers, to the end
	stopDelivered(t, j, hook, 30)
	for _, e := range hook.Events() {
		if bytes.Contains(e.Body, []byte(`"aborted-`)) {
			t.Errorf("an impression of the aborted transaction was delivered: %s", e.Body)
		}
	}

	all, allCfg := webhook(t, "acme", destsim.Options{}, "")
	j = startConfig(t, tp, writeConfig(t, allCfg), "--isolation", "read_uncommitted", "--group", "uncommitted")
	waitFor(t, j, all, 45)
	if code := j.stop(); code != 0 {
		t.Errorf("read_uncommitted: exit %d after SIGINT\n%s", code, j.stderr.String())
	}
}

// Records deleted from a real broker (as retention does) past where the group's
// offsets are: by default the stream refuses to start, exit 1, naming the partitions
// and how many records were lost, and delivers nothing; with --offset-out-of-range
// earliest it says so in an ERROR line and delivers what the log still holds, once,
// committing to the end.
func TestStreamLostOffsets(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t)
	tp := topicOn(t, k.Plain, kafkaio.Security{})
	hook, hookCfg := webhook(t, "acme", destsim.Options{}, "")
	cfgPath := writeConfig(t, hookCfg)
	j := startConfig(t, tp, cfgPath)
	tp.produce("acme", keys("a", 0, 30)...) // 10 a partition
	waitFor(t, j, hook, 30)
	waitCommitted(t, j, tp)
	if code := j.stop(); code != 0 {
		t.Fatalf("exit %d after SIGINT\n%s", code, j.stderr.String())
	}

	tp.produce("acme", keys("b", 0, 30)...) // while it is down: offsets 10..19
	var offs kadm.Offsets
	for p := range int32(3) {
		offs.AddOffset("impressions", p, 15, -1) // retention takes 10..14
	}
	resp, err := kadm.NewClient(tp.cl).DeleteRecords(context.Background(), offs)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatal(err)
	}

	j = startConfig(t, tp, cfgPath, "--start-timeout", "30s")
	select {
	case <-j.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("records lost: the job still runs after 60 s\n%s", j.stderr.String())
	}
	if code := j.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(j.stderr.String(), "5 records were lost") ||
		!strings.Contains(j.stderr.String(), "offset-out-of-range") {
		t.Errorf("records lost: exit %d; want 1, saying 5 records were lost and what to set\n%s", code, j.stderr.String())
	}
	if st := hook.Status(); st.UniqueEvents != 30 {
		t.Errorf("the job that refused to start delivered %d impressions", st.UniqueEvents-30)
	}

	j = startConfig(t, tp, cfgPath, "--offset-out-of-range", "earliest")
	waitFor(t, j, hook, 45)
	waitCommitted(t, j, tp)
	if code := j.stop(); code != 0 {
		t.Errorf("exit %d after SIGINT\n%s", code, j.stderr.String())
	}
	if st := hook.Status(); st.UniqueEvents != 45 || st.Duplicates != 0 {
		t.Errorf("webhook: %d unique, %d sent again; want 45 (30 and the 15 the log still held), 0", st.UniqueEvents, st.Duplicates)
	}
	if n := strings.Count(j.stderr.String(), "records lost before they were read"); n != 3 {
		t.Errorf("%d ERROR lines of records lost, want one for each of the 3 partitions\n%s", n, j.stderr.String())
	}
}
