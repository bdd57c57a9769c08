package testenv

import (
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/prometheus/common/expfmt"
)

// Get returns the status and body of GET http://addr/path; status 0 and the error
// when nothing answers.
func Get(addr, path string) (int, string) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Scrape reads the Prometheus metrics served at addr: name -> the value of label
// (summed over the other labels) -> value; a histogram's value is its count.
func Scrape(addr, label string) (map[string]map[string]float64, error) {
	code, body := Get(addr, "/metrics")
	if code != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %d %s", code, body)
	}
	families, err := new(expfmt.TextParser).TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("/metrics: %w", err)
	}
	out := map[string]map[string]float64{}
	for name, f := range families {
		out[name] = map[string]float64{}
		for _, m := range f.Metric {
			key := ""
			for _, l := range m.Label {
				if l.GetName() == label {
					key = l.GetValue()
				}
			}
			out[name][key] += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return out, nil
}
