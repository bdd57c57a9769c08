package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/testenv"
	"github.com/outflow/outflow/io/deadletterio"
)

func goodLine(key string, t int64) string {
	return fmt.Sprintf(`{"tenant":"acme","environmentName":"production","key":"%s","split":"s","treatment":"on","time":%d}`, key, t)
}

// Hostile input: each bad line or file is dead-lettered with its reason or reported,
// the job carries on, and the counts add up: every line read is delivered, a dropped
// copy, invalid or outside the range.
func TestHostileInput(t *testing.T) { testHostileInput(t) }

// testHostileInput runs TestHostileInput's backfill with runner flags.
func testHostileInput(t *testing.T, runner ...string) {
	dir := t.TempDir()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gz := func(s string) string {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write([]byte(s))
		zw.Close()
		return b.String()
	}
	cases := []struct {
		name, content              string
		valid, invalid, fileErrors int
	}{
		{"a-huge.ndjson", `{"tenant":"acme","key":"` + strings.Repeat("k", 2<<20) + `"}` + "\n" + goodLine("after-huge", base), 1, 1, 0},
		{"b-utf8.ndjson", strings.Replace(goodLine("bad-utf8", base), "bad", "b\xffd", 1) + "\n" + goodLine("good-utf8", base+1), 1, 1, 0},
		{"c-nested.ndjson", `{"tenant":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + "}\n", 0, 1, 0},
		{"d-numbers.ndjson", strings.Join([]string{
			strings.Replace(goodLine("exp", 0), `"time":0`, `"time":1e400`, 1),
			strings.Replace(goodLine("big", 0), `"time":0`, `"time":99999999999999999999`, 1),
			goodLine("negative", -5),
			strings.Replace(goodLine("svn", base), `}`, `,"splitVersionNumber":-99999999999999999999}`, 1),
			goodLine("year-10000", 253402300800000), // its object could not be named
			goodLine("int64-max", 9223372036854775807),
		}, "\n"), 0, 6, 0},
		{"e-future.ndjson", goodLine("far-future", 253402300799000) + "\n" + goodLine("early", base-86400000), 2, 0, 0},
		{"f-empty.ndjson", "", 0, 0, 0},
		{"g-truncated.ndjson.gz", gz(goodLine("t1", base) + "\n" + goodLine("t2", base+1) + "\n")[:40], 0, 0, 1},
		{"h-notgzip.ndjson.gz", goodLine("plain", base), 0, 0, 1},
		{"i-dup.ndjson", goodLine("dup", base+5) + "\n" + goodLine("dup", base+5) + "\n\n   \n", 2, 0, 0},
	}
	var valid, invalid, fileErrors int
	for _, c := range cases {
		write(c.name, c.content)
		valid, invalid, fileErrors = valid+c.valid, invalid+c.invalid, fileErrors+c.fileErrors
	}

	s3 := testenv.NewS3(t)
	bucket := s3.Bucket(t)
	deadLetter := t.TempDir()
	cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %s
integrations:
  - {id: acme-s3, tenant: acme, type: s3, s3: {bucket: %s, endpoint: %s}}
`, deadLetter, bucket, s3.Endpoint))
	// --since drops the "early" line: filtered, not lost.
	r := runBackfill(t, append([]string{"--config", cfgPath, "--input", filepath.Join(dir, "*"), "--since", "2025-12-31T12:00:00Z"}, runner...)...)
	if r.code != 3 {
		t.Fatalf("exit code %d; want 3: invalid lines do not change it, damaged files do\n%s", r.code, r.stderr)
	}
	rep := r.report
	in := rep.Integrations[0]
	t.Logf("lines %d = delivered %d + duplicates %d + invalid %d + filtered %d; file errors %d",
		rep.Lines, in.Delivered, in.Duplicates, rep.InvalidLines, rep.Filtered, rep.FileErrors)
	if rep.Lines != in.Delivered+in.Duplicates+rep.InvalidLines+rep.Filtered {
		t.Errorf("counts do not add up")
	}
	if rep.InvalidLines != int64(invalid) || rep.FileErrors != int64(fileErrors) || rep.Filtered != 1 ||
		in.Delivered != int64(valid-2) || in.Duplicates != 1 {
		t.Errorf("want %d invalid, %d file errors, 1 filtered, %d delivered, 1 duplicate", invalid, fileErrors, valid-2)
	}
	cfg, _ := config.Load(cfgPath)
	objects := s3.Objects(t, bucket, "")
	found := map[string]int{}
	for key := range objects {
		if strings.Contains(key, "dt=9999-12-31") {
			found["far-future"]++
		}
	}
	if found["far-future"] != 1 {
		t.Errorf("the far-future impression is not in one object of its window: %v", keysOf(objects))
	}
	_ = cfg
	// Every bad line and file is in the dead-letter store with a reason.
	var dead []string
	raws := map[string]bool{} // the exact bytes of every line dead-lettered
	files, _ := filepath.Glob(filepath.Join(deadLetter, "invalid", "*.ndjson"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			dead = append(dead, l)
			var rec deadletterio.Record
			if err := json.Unmarshal([]byte(l), &rec); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			raws[string(rec.RawBytes())] = true
		}
	}
	if len(dead) != invalid+fileErrors {
		t.Errorf("%d dead-letter records, want %d", len(dead), invalid+fileErrors)
	}
	all := strings.Join(dead, "\n")
	for _, reason := range []string{"longer than the limit", "not valid UTF-8", "invalid JSON", "must be an integer literal",
		"out of range", "must be >= 0", "unexpected EOF", "not a gzip file", `"file_error":true`} {
		if !strings.Contains(all, reason) {
			t.Errorf("no dead-letter record says %q", reason)
		}
	}
	// The store holds the input, byte for byte: the 2 MiB line and the one that is not UTF-8.
	for _, c := range cases[:2] {
		if first, _, _ := strings.Cut(c.content, "\n"); !raws[first] {
			t.Errorf("the invalid line of %s (%d bytes) is not in the store byte for byte", c.name, len(first))
		}
	}
}

func keysOf(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// Keys, write keys, webhook secrets and AWS keys never appear in what a run leaves:
// its output, report, dead letters and state, even when every destination refuses
// them.
func TestSecretsNeverLeak(t *testing.T) {
	const (
		ampKey  = "amp-SECRET-1a2b3c4d"
		segKey  = "seg-SECRET-4d5e6f7a"
		hookKey = "c2VjcmV0LVNFQ1JFVC13ZWJob29rLWtleS0xMjM0NTY3OA==" // base64 of a 32-byte key
	)
	// An external S3 server (MinIO in CI) only accepts its own keys; the in-process
	// one accepts any, so give it a recognisable secret.
	if os.Getenv(testenv.S3EndpointEnv) == "" {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "aws-SECRET-9f8e7d6c")
		t.Setenv("AWS_ACCESS_KEY_ID", "outflow-test")
	}
	s3 := testenv.NewS3(t)
	awsSecret := os.Getenv("AWS_SECRET_ACCESS_KEY")
	bucket := s3.Bucket(t)
	// Each destination expects other credentials, so every request is refused.
	amp := testenv.Destination(t, destsim.Options{Kind: destsim.Amplitude, APIKey: "the-right-key"})
	seg := testenv.Destination(t, destsim.Options{Kind: destsim.Segment, WriteKey: "the-right-key"})
	hook := testenv.Destination(t, destsim.Options{Kind: destsim.Webhook, Tenant: "initech", Secret: hookSecret})
	deadLetter := t.TempDir()
	t.Setenv("ACME_AMPLITUDE_KEY", ampKey)
	cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %s
allow_private_destinations: true
integrations:
  - {id: acme-s3, tenant: acme, type: s3, s3: {bucket: %s, endpoint: %s}}
  - {id: acme-amp, tenant: acme, type: amplitude, amplitude: {api_key: "${ACME_AMPLITUDE_KEY}", endpoint: %q}}
  - {id: globex-seg, tenant: globex, type: segment, segment: {write_key: %q, endpoint: %q}}
  - {id: initech-hook, tenant: initech, type: webhook, webhook: {url: %q, secret: "whsec_%s"}}
`, deadLetter, bucket, s3.Endpoint, amp.URL(), segKey, seg.URL(), hook.URL()+"/h", hookKey))
	reportPath := filepath.Join(t.TempDir(), "report.json")
	out := testenv.Run(t, testenv.Build(t, "./pipelines/backfill"), "--config", cfgPath, "--input", sampleGlob, "--report", reportPath)
	if out.Code != 3 {
		t.Fatalf("exit code %d, want 3 (everything refused)\n%s", out.Code, out.Stderr)
	}
	texts := map[string]string{"stdout": out.Stdout, "stderr": out.Stderr}
	add := func(path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		texts[path] = string(b)
	}
	add(reportPath)
	filepath.Walk(deadLetter, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			add(p)
		}
		return nil
	})
	if len(texts) < 5 {
		t.Fatalf("only %d outputs to search; the test proves little", len(texts))
	}
	deadLettered := 0
	for name, text := range texts {
		for _, secret := range []string{awsSecret, ampKey, segKey, hookKey, hookKey[:20]} {
			if strings.Contains(text, secret) {
				t.Errorf("%s contains a secret (%s…)", name, secret[:6])
			}
		}
		deadLettered += strings.Count(text, `"impression":`)
	}
	if deadLettered == 0 {
		t.Error("no undeliverable impression was dead-lettered; the refusals did not happen")
	}
}
