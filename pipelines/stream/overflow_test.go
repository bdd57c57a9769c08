package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/report"
	"github.com/outflow/outflow/io/deadletterio"
)

// A destination that is down holds at most max_pending_impressions of the stream's
// memory: what arrives beyond is dead-lettered with the reason and counted as
// overflowed in the report, and a healthy destination beside it gets everything.
func TestStreamOverflowToDeadLetters(t *testing.T) {
	t.Parallel()
	tp := newTopic(t)
	down, downCfg := webhook(t, "acme", destsim.Options{Status: 503}, ", delivery: {max_pending_impressions: 30}")
	healthy, healthyCfg := webhook(t, "globex", destsim.Options{}, "")
	tp.produce("acme", keys("a", 0, 100)...)
	tp.produce("globex", keys("g", 0, 100)...)
	j := startConfig(t, tp, writeConfig(t, downCfg+healthyCfg), "--shutdown-timeout", "2s")
	waitFor(t, j, healthy, 100)

	// The overflow is dead-lettered as soon as it arrives; the files are written every 5 s.
	dead := filepath.Join(filepath.Dir(j.config), "dead")
	var recs []deadletterio.Record
	for deadline := time.Now().Add(60 * time.Second); len(recs) < 70 && time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		recs = readDeadLetters(t, dead)
	}
	j.stop()
	if len(recs) != 70 {
		t.Fatalf("%d dead-letter records within 60 s, want the 70 impressions beyond the 30 held\n%s", len(recs), j.stderr.String())
	}
	for _, r := range recs {
		if r.Integration != "acme-hook" || r.Impression == nil || !strings.Contains(r.Reason, "max_pending_impressions") {
			t.Fatalf("record %+v: want acme-hook's impression and the reason", r)
		}
	}
	if !strings.Contains(j.stderr.String(), "max_pending_impressions") {
		t.Errorf("no log line says why impressions were dead-lettered\n%s", j.stderr.String())
	}
	var rep report.Report
	data, err := os.ReadFile(filepath.Join(filepath.Dir(j.config), "report.json"))
	if err == nil {
		err = json.Unmarshal(data, &rep)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range rep.Integrations {
		if in.ID == "acme-hook" && in.Overflowed != 70 {
			t.Errorf("report: acme-hook overflowed %d, want 70", in.Overflowed)
		}
	}
	if st := healthy.Status(); st.UniqueEvents != 100 || st.Duplicates != 0 {
		t.Errorf("healthy destination: %d unique, %d duplicates; want 100, 0", st.UniqueEvents, st.Duplicates)
	}
	if down.Status().Requests == 0 {
		t.Error("the down destination was never tried; the test proves nothing")
	}
}

// readDeadLetters reads every dead-letter record under dir.
func readDeadLetters(t *testing.T, dir string) []deadletterio.Record {
	t.Helper()
	recs, err := deadletterio.ReadLocal(filepath.Join(dir, "*", "*.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	return recs
}
