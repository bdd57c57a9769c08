package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Kafka is a real Apache Kafka broker (scripts/kafka) for one test.
type Kafka struct {
	Plain   string // HOST:PORT of the plain listener
	SASLSSL string // HOST:PORT of the SASL_SSL listener
	SSL     string // HOST:PORT of the SSL listener that takes ClientCert only
	CAFile  string // the PEM clients of SASL_SSL and SSL trust
	// ClientCert and ClientKey are the PEM files of the client certificate SSL takes.
	ClientCert, ClientKey string
	User                  string // SASL user (PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512)
	Pass                  string

	port   int
	dir    string
	broker *script
	log    SyncBuffer
}

// kafkaStartLimit bounds the wait for a broker: the first start fetches its jars.
const kafkaStartLimit = 3 * time.Minute

// NewKafka starts a broker of its own for the test, stopped when the test ends.
// Without Java the test is skipped, saying so, unless $OUTFLOW_REQUIRE_JAVA is set.
func NewKafka(t testing.TB) *Kafka {
	t.Helper()
	if _, err := exec.LookPath("java"); err != nil && os.Getenv(RequireJavaEnv) == "" {
		t.Skipf("no Kafka broker: java not found (set %s to fail instead)", RequireJavaEnv)
	}
	k := &Kafka{User: "outflow", Pass: "outflow-test-secret"}
	// Four ports in a row: plain, SASL_SSL, controller, SSL. Another process may take
	// one between the look and the broker's bind: then new ports, a fresh log.
	for attempt := 1; ; attempt++ {
		port, err := freePorts(4)
		if err != nil {
			t.Fatal(err)
		}
		k.port, k.dir, k.log = port, t.TempDir(), SyncBuffer{}
		err = k.start()
		if err == nil {
			break
		}
		if attempt == 3 || !strings.Contains(k.log.String(), "Address already in use") {
			t.Fatalf("%v\n%s", err, k.log.String())
		}
	}
	t.Cleanup(func() { k.broker.stop() })
	return k
}

func (k *Kafka) start() error {
	broker, err := startScript(&k.log, []string{"OUTFLOW_KAFKA_PASSWORD=" + k.Pass}, kafkaStartLimit, func(line string) bool {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "plain":
			k.Plain = f[1]
		case len(f) == 3 && f[0] == "sasl_ssl":
			k.SASLSSL, k.CAFile = f[1], f[2]
		case len(f) == 5 && f[0] == "ssl":
			k.SSL, k.ClientCert, k.ClientKey = f[1], f[3], f[4]
			return true
		}
		return false
	}, "kafka", "--port", strconv.Itoa(k.port), "--dir", k.dir)
	k.broker = broker
	return err
}

// Restart stops the broker and starts it again on the same ports and log: what it
// had written survives, as on a real restart.
func (k *Kafka) Restart(t testing.TB) {
	t.Helper()
	k.broker.stop()
	if err := k.start(); err != nil {
		t.Fatalf("%v\n%s", err, k.log.String())
	}
}

// freePorts returns the first of n consecutive ports free on loopback.
func freePorts(n int) (int, error) {
	for range 50 {
		first, err := freePort()
		if err != nil {
			return 0, err
		}
		ok := true
		for p := first + 1; p < first+n && ok; p++ {
			ok = portFree(p)
		}
		if ok {
			return first, nil
		}
	}
	return 0, fmt.Errorf("no %d consecutive free ports", n)
}

// portFree says whether port is free on loopback.
func portFree(port int) bool {
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}
