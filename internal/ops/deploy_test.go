package ops

import (
	"encoding/json"
	"os"
	"regexp"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"
)

// served are the names of the metrics /metrics serves, with a histogram's series.
func served() map[string]bool {
	ch := make(chan *prometheus.Desc, 64)
	reportCollector{}.Describe(ch)
	lagCollector(nil).Describe(ch)
	close(ch)
	names := map[string]bool{}
	fq := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for d := range ch {
		name := fq.FindStringSubmatch(d.String())[1]
		names[name] = true
		if d == descDelay {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[name+s] = true
			}
		}
	}
	return names
}

var metricRef = regexp.MustCompile(`outflow_[a-z_]+`)

// checkRefs fails for every metric expr names that /metrics does not serve.
func checkRefs(t *testing.T, where, expr string, names map[string]bool) {
	t.Helper()
	for _, m := range metricRef.FindAllString(expr, -1) {
		if !names[m] {
			t.Errorf("%s names %s, which /metrics does not serve", where, m)
		}
	}
}

// The alerting rules are valid YAML in Prometheus' rule-file shape, hold the delay
// SLO and a dead-letter alert, and name only metrics that exist.
func TestDeployAlertRules(t *testing.T) {
	data, err := os.ReadFile("../../deploy/prometheus/outflow-alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Alert, Expr, For string
			}
		}
	}
	if err := yaml.Unmarshal(data, &rules); err != nil {
		t.Fatal(err)
	}
	names := served()
	alerts := map[string]string{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("group %s: a rule without alert or expr: %+v", g.Name, r)
			}
			alerts[r.Alert] = r.Expr
			checkRefs(t, "alert "+r.Alert, r.Expr, names)
		}
	}
	if !regexp.MustCompile(`outflow_oldest_pending_seconds.*>\s*2\s*\*`).MatchString(alerts["OutflowDeliveryDelay"]) {
		t.Errorf("no delay SLO on outflow_oldest_pending_seconds > 2 x window: %q", alerts["OutflowDeliveryDelay"])
	}
	if !regexp.MustCompile(`outflow_dead_lettered_impressions_total`).MatchString(alerts["OutflowDeadLettering"]) {
		t.Errorf("no dead-letter alert: %q", alerts["OutflowDeadLettering"])
	}
}

// The dashboard is valid JSON with a row repeated per integration, and its queries
// name only metrics that exist.
func TestDeployDashboard(t *testing.T) {
	data, err := os.ReadFile("../../deploy/grafana/outflow-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Type, Title, Repeat string
			Targets             []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	names := served()
	rows, queries := 0, 0
	for _, p := range dash.Panels {
		if p.Type == "row" && p.Repeat == "integration" {
			rows++
		}
		for _, q := range p.Targets {
			queries++
			checkRefs(t, "panel "+p.Title, q.Expr, names)
		}
	}
	if rows != 1 || queries < 6 {
		t.Errorf("%d rows repeated per integration (want 1), %d queries", rows, queries)
	}
}
