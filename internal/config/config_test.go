package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outflow/outflow/transforms/encode"
)

// contractExample is CONTRACT §2's example, with its secret made valid base64.
const contractExample = `
dead_letter: ./out/dead-letter
allow_private_destinations: false
integrations:
  - id: acme-s3
    tenant: acme
    type: s3
    environments: [production]
    splits: [new_checkout]
    window: 1h
    s3:
      bucket: acme-impressions
      prefix: split/impressions/
      region: us-east-1
      endpoint: http://127.0.0.1:9000
      format: ndjson
  - id: acme-gcs
    tenant: acme
    type: gcs
    gcs: {bucket: acme-imp, prefix: split, format: ndjson}
  - id: acme-amplitude
    tenant: acme
    type: amplitude
    window: 1m
    amplitude: {api_key: "${ACME_AMPLITUDE_KEY}", endpoint: "https://api2.amplitude.com", event_type: get_treatment, id_field: user_id}
    delivery: {requests_per_second: 20, max_in_flight: 4, max_batch_events: 1000}
  - id: globex-segment
    tenant: globex
    type: segment
    segment: {write_key: "${GLOBEX_SEGMENT_KEY}", endpoint: "https://api.segment.io"}
  - id: globex-hook
    tenant: globex
    type: webhook
    webhook: {url: "https://hooks.globex.example/split", secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", gzip: true}
`

func TestContractExample(t *testing.T) {
	t.Setenv("ACME_AMPLITUDE_KEY", "amp-key-123")
	t.Setenv("GLOBEX_SEGMENT_KEY", "seg-key-456")
	cfg, err := Parse([]byte(contractExample))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Integrations) != 5 {
		t.Fatalf("%d integrations, want 5", len(cfg.Integrations))
	}
	s3 := cfg.Integrations[0]
	if s3.Window.D() != time.Hour || s3.S3.Prefix != "split/impressions" || s3.S3.Format != encode.NDJSON ||
		s3.Shards != 0 || ShardsOf(s3) != DefaultShards || s3.S3.ObjectBytes != encode.DefaultObjectBytes || s3.S3.Endpoint != "http://127.0.0.1:9000" {
		t.Errorf("s3 integration = %+v %+v", s3, s3.S3)
	}
	if g := cfg.Integrations[1]; g.Window.D() != DefaultObjectWindow {
		t.Errorf("gcs window = %v, want default %v", g.Window.D(), DefaultObjectWindow)
	}
	amp := cfg.Integrations[2]
	if amp.Amplitude.APIKey.Reveal() != "amp-key-123" || amp.Delivery.RequestsPerSecond != 20 {
		t.Errorf("amplitude = %+v %+v", amp.Amplitude, amp.Delivery)
	}
	if seg := cfg.Integrations[3]; seg.Window.D() != DefaultHTTPWindow || seg.Segment.Event != "get_treatment" ||
		seg.AlertDelay.D() != 2*DefaultHTTPWindow {
		t.Errorf("segment = %+v", seg)
	}
	if cfg.Integrations[0].Environments[0] != "production" || cfg.Integrations[1].Environments != nil {
		t.Errorf("filters: %v %v", cfg.Integrations[0].Environments, cfg.Integrations[1].Environments)
	}
}

func TestEveryProblemReported(t *testing.T) {
	t.Setenv("SET_BUT_EMPTY", "")
	text := `
dead_letter: ftp://x/y
integrations:
  - id: Bad_ID
    tenant: acme
    type: s3
    s3: {bucket: ok-bucket}
  - id: dup
    tenant: acme
    type: s3
    window: 5x
    s3: {bucket: "", format: xml, endpoint: "not a url"}
  - id: dup
    tenant: ""
    type: kafka
  - id: amp
    tenant: acme
    type: amplitude
    environments: []
    amplitude: {api_key: "${NOT_SET_ANYWHERE}", endpoint: "http://127.0.0.1:8080"}
    delivery: {requests_per_second: -1}
  - id: hook
    tenant: acme
    type: webhook
    shards: 0
    alert_delay: -1s
    bogus_field: 1
    webhook: {url: "https://example.com/h", secret: "plain"}
    s3: {bucket: stray}
  - id: seg
    tenant: acme
    type: segment
    segment: {write_key: "${SET_BUT_EMPTY}"}
    delivery: {retry_schedule: [5s, 0s]}
  - id: half-second
    tenant: acme
    type: gcs
    window: 1500ms
    gcs: {bucket: ok-bucket, prefix: half}
  - id: hook-ms
    tenant: acme
    type: webhook
    window: 1500ms
    webhook: {url: "https://example.com/ms", secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
`
	_, err := Parse([]byte(text))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("Parse = %v, want *Error", err)
	}
	all := strings.Join(ce.Problems, "\n")
	for _, want := range []string{
		`dead_letter: "ftp://x/y" must be a directory`,
		`integrations[0]: id: "Bad_ID" may only hold`,
		`integration "dup": id: "dup" is used by another integration`,
		`integration "dup": window (line 11): "5x" is not a duration`,
		`integration "dup": s3.bucket: is required`,
		`integration "dup": s3.format: "xml" is not one of`,
		`integration "dup": s3.endpoint: "not a url" must start with http`,
		`integration "dup": tenant: is required`,
		`integration "dup": type: "kafka" is not one of`,
		`integration "amp": environments: is an empty list`,
		`integration "amp": amplitude.api_key: environment variable NOT_SET_ANYWHERE is not set`,
		`integration "amp": amplitude.endpoint: 127.0.0.1 is a private, loopback`,
		`integration "amp": delivery.requests_per_second: must be > 0`,
		`integration "hook": alert_delay: must be positive; got -1s`,
		`integration "hook": bogus_field (line 27): unknown field "bogus_field"`,
		`integration "hook": webhook.secret: must be whsec_`,
		`integration "hook": s3: section given, but the type is "webhook"`,
		`integration "seg": segment.write_key: is required`,
		`integration "seg": delivery.retry_schedule[1]: must be > 0; got 0s`,
		`integration "half-second": window: 1.5s must be a whole number of seconds for an object store`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("problems lack %q", want)
		}
	}
	if strings.Contains(all, "plain") {
		t.Errorf("a secret value leaked into the problems:\n%s", all)
	}
	if strings.Contains(all, `"hook-ms"`) {
		t.Errorf("an HTTP integration's window of whole milliseconds is refused: it names no object")
	}
	if t.Failed() {
		t.Logf("problems:\n%s", all)
	}
}

func TestAllowPrivateDestinations(t *testing.T) {
	text := `
allow_private_destinations: true
integrations:
  - {id: amp, tenant: acme, type: amplitude, amplitude: {api_key: k, endpoint: "http://127.0.0.1:8080"}}
`
	if _, err := Parse([]byte(text)); err != nil {
		t.Fatal(err)
	}
}

func TestEmptyAndBrokenFiles(t *testing.T) {
	for name, text := range map[string]string{
		"empty":           "",
		"comment only":    "# nothing\n",
		"bad yaml":        "integrations: [\n",
		"no integrations": "dead_letter: ./x\n",
	} {
		if _, err := Parse([]byte(text)); err == nil {
			t.Errorf("%s: Parse succeeded", name)
		}
	}
	if _, err := Load("/nonexistent/outflow.yaml"); err == nil || !strings.Contains(err.Error(), "/nonexistent/outflow.yaml") {
		t.Errorf("Load of a missing file = %v", err)
	}
}
