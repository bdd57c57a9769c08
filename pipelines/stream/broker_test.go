package main

import (
	"context"
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
// never shows in the job's output. A wrong password fails at start: exit 1, saying
// why.
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

	wrong := startConfigEnv(t, tp, cfgPath, []string{"OUTFLOW_KAFKA_PASSWORD=not-it"}, append(flags, "--start-timeout", "5s")...)
	select {
	case <-wrong.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("a wrong password: the job still runs after 60 s\n%s", wrong.stderr.String())
	}
	if code := wrong.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(strings.ToLower(wrong.stderr.String()), "authentication") {
		t.Errorf("a wrong password: exit %d, want 1 saying authentication failed\n%s", code, wrong.stderr.String())
	}
	if strings.Contains(wrong.stderr.String(), "not-it") {
		t.Errorf("the job printed the password\n%s", wrong.stderr.String())
	}

	j := startConfigEnv(t, tp, cfgPath, []string{"OUTFLOW_KAFKA_PASSWORD=" + k.Pass}, flags...)
	tp.produce("acme", keys("a", 0, 60)...)
	waitFor(t, j, hook, 60)
	waitCommitted(t, j, tp)
	if code := j.stop(); code != 0 {
		t.Errorf("exit %d after SIGINT\n%s", code, j.stderr.String())
	}
	if st := hook.Status(); st.UniqueEvents != 60 || st.Duplicates != 0 {
		t.Errorf("webhook: %d unique, %d sent again; want 60, 0", st.UniqueEvents, st.Duplicates)
	}
	if strings.Contains(j.stderr.String(), k.Pass) {
		t.Errorf("the job printed the password\n%s", j.stderr.String())
	}
}
