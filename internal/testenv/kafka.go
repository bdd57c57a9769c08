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
	CAFile  string // the PEM clients of SASL_SSL trust
	User    string // SASL user (PLAIN and SCRAM-SHA-512)
	Pass    string
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
	// Three ports in a row: plain, SASL_SSL, controller.
	port, err := freePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	k := &Kafka{User: "outflow", Pass: "outflow-test-secret"}
	var log SyncBuffer
	broker, err := startScript(&log, []string{"OUTFLOW_KAFKA_PASSWORD=" + k.Pass}, kafkaStartLimit, func(line string) bool {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "plain":
			k.Plain = f[1]
		case len(f) == 3 && f[0] == "sasl_ssl":
			k.SASLSSL, k.CAFile = f[1], f[2]
			return true
		}
		return false
	}, "kafka", "--port", strconv.Itoa(port), "--dir", t.TempDir())
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Cleanup(broker.stop)
	return k
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
