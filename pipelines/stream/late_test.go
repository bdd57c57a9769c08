package main

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/report"
	"github.com/outflow/outflow/internal/testenv"
	"github.com/outflow/outflow/io/deadletterio"
	"github.com/outflow/outflow/transforms/encode"
)

// Impressions far from their Kafka record's time, and records stamped far from the
// clock, once the watermark follows the clock: records stamped hours before it, a
// record stamped in microseconds, impressions hours old in fresh records (an SDK that
// buffered them), impressions hours ahead (a skewed clock). None is dropped or pins
// the offsets: the webhook gets each once; the object store gets those near their
// record's time, the others are dead-lettered for it as late or ahead, and replay
// stores them, each once and in its own window; the group commits every partition to
// its end.
func TestStreamImpressionsFarFromRecordTime(t *testing.T) {
	t.Parallel()
	tp := newTopic(t)
	s3, bucket, s3Cfg := acmeS3(t)
	hook, hookCfg := webhook(t, "acme", destsim.Options{}, "")
	cfgPath := writeConfig(t, hookCfg+s3Cfg)
	j := startConfig(t, tp, cfgPath)

	now := time.Now()
	tp.produceAt(now, "acme", keys("now", 0, 20)...)
	waitFor(t, j, hook, 20)
	time.Sleep(3 * time.Second) // the topic idle, the watermark follows the clock
	hoursAgo, hoursAhead := time.Now().Add(-3*time.Hour), time.Now().Add(5*time.Hour)
	tp.produceStamped(hoursAgo, hoursAgo, "acme", keys("old-record", 0, 10)...)
	tp.produceStamped(time.Time{}, hoursAgo, "acme", keys("buffered", 0, 10)...)
	tp.produceStamped(time.Time{}, hoursAhead, "acme", keys("skewed", 0, 10)...)
	tp.produceStamped(time.UnixMilli(time.Now().UnixMicro()), time.Now(), "acme", keys("micros", 0, 10)...)
	tp.produceAt(time.Now(), "acme", keys("after", 0, 10)...)
	waitFor(t, j, hook, 70)
	waitCommitted(t, j, tp)
	time.Sleep(3 * time.Second) // time for a copy to arrive, if one were sent
	if code := j.stop(); code != 3 {
		t.Fatalf("exit code %d after SIGINT, want 3: impressions were dead-lettered\n%s", code, j.stderr.String())
	}
	var rep report.Report
	data, err := os.ReadFile(filepath.Join(filepath.Dir(cfgPath), "report.json"))
	if err == nil {
		err = json.Unmarshal(data, &rep)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range rep.Integrations {
		want := map[string]int64{}
		if in.ID == "acme-s3" {
			want = map[string]int64{"late": 20, "ahead": 10}
		}
		if !maps.Equal(in.DeadLetteredBy, want) {
			t.Errorf("report: %s dead-lettered %v, want %v", in.ID, in.DeadLetteredBy, want)
		}
	}
	if st := hook.Status(); st.UniqueEvents != 70 || st.Duplicates != 0 {
		t.Errorf("webhook: %d unique, %d sent again; want 70, 0", st.UniqueEvents, st.Duplicates)
	}

	// held returns how many objects hold each impression, and fails for one stored
	// outside its object's window.
	held := func() map[string]int {
		n := map[string]int{}
		for key, body := range s3.DataObjects(t, bucket, "acme/") {
			name, ok := encode.ParseKey(key)
			if !ok {
				continue
			}
			recs, err := encode.ReadObject(bytes.NewReader(body), encode.NDJSON)
			if err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			for _, r := range recs {
				n[r.Key]++
				if at := time.UnixMilli(r.Time); at.Before(name.Start) || !at.Before(name.End) {
					t.Errorf("%s at %v is stored in %s, a window not its own", r.Key, at.UTC(), key)
				}
			}
		}
		return n
	}
	stored := held()
	near := slices.Concat(keys("now", 0, 20), keys("micros", 0, 10), keys("after", 0, 10))
	far := map[string]string{} // key -> the class it is dead-lettered for
	for _, k := range slices.Concat(keys("old-record", 0, 10), keys("buffered", 0, 10)) {
		far[k] = "late"
	}
	for _, k := range keys("skewed", 0, 10) {
		far[k] = "ahead"
	}
	for _, k := range near {
		if stored[k] != 1 {
			t.Errorf("%s is in %d objects, want 1", k, stored[k])
		}
	}
	dir := filepath.Join(filepath.Dir(cfgPath), "dead")
	dead := map[string]int{}
	for _, r := range readDeadLetters(t, dir) {
		if r.Impression == nil {
			t.Errorf("an unexpected dead letter: %+v", r)
			continue
		}
		k := r.Impression.Key
		dead[k]++
		if class, ok := far[k]; !ok || r.Integration != "acme-s3" || !strings.HasPrefix(r.Reason, class+": ") {
			t.Errorf("%s dead-lettered for %q with reason %q; want acme-s3 and %q", k, r.Integration, r.Reason, far[k])
		}
	}
	for k := range far {
		if stored[k] != 0 || dead[k] != 1 {
			t.Errorf("%s: in %d objects and %d dead letters; want 0 and 1", k, stored[k], dead[k])
		}
	}

	replay := testenv.Run(t, testenv.Build(t, "./pipelines/replay"), "--config", cfgPath, "--dead-letter", dir)
	if replay.Code != 0 {
		recs, _ := deadletterio.ReadLocal(filepath.Join(dir, "*", "*.ndjson"))
		t.Fatalf("replay: exit %d\n%s\n%s\nin the store: %+v", replay.Code, replay.Stdout, replay.Stderr, recs)
	}
	stored = held()
	for _, k := range slices.Concat(near, keys("old-record", 0, 10), keys("buffered", 0, 10), keys("skewed", 0, 10)) {
		if stored[k] != 1 {
			t.Errorf("after replay, %s is in %d objects, want 1", k, stored[k])
		}
	}
}
