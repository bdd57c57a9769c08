// Package config loads and validates outflow's YAML configuration (CONTRACT §2).
//
// Each destination owns its section (s3io.Config, amplitudeio.Config, …); this package
// composes them, expands ${ENV} references and reports every problem at once, each
// naming the integration and field.
package config

import (
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/outflow/outflow/internal/configkit"
	"github.com/outflow/outflow/io/amplitudeio"
	"github.com/outflow/outflow/io/delivery"
	"github.com/outflow/outflow/io/gcsio"
	"github.com/outflow/outflow/io/s3io"
	"github.com/outflow/outflow/io/segmentio"
	"github.com/outflow/outflow/io/webhookio"
)

// Config is a whole configuration file.
type Config struct {
	// DeadLetter is where undeliverable impressions and invalid input lines go: a
	// directory, s3://bucket/prefix or gs://bucket/prefix.
	DeadLetter string `yaml:"dead_letter" json:"dead_letter"`
	// AllowPrivateDestinations lets HTTP sinks reach loopback and private addresses.
	AllowPrivateDestinations bool          `yaml:"allow_private_destinations" json:"allow_private_destinations"`
	Integrations             []Integration `yaml:"integrations" json:"integrations"`
	// Files says how s3:// paths (--input, dead_letter) are reached; gs:// paths honour
	// STORAGE_EMULATOR_HOST.
	Files Files `yaml:"files" json:"files"`

	// Live, set by the stream job and never by a config file, makes windows accept
	// late impressions and turns on delay alerts (a backfill's impressions are old by
	// design, and its watermark passes a window only when all input is read).
	Live bool `yaml:"-" json:"-"`
	// Since and Until, set by the backfill and never by a config file, are its
	// --since/--until (zero: open): object stores name a window they cut by the part
	// the run covers.
	Since, Until time.Time `yaml:"-" json:"-"`
}

// Files is the `files:` section.
type Files struct {
	S3 s3io.Connection `yaml:"s3" json:"s3"`
}

// DefaultDeadLetter is used when the config names no dead-letter store.
const DefaultDeadLetter = "./out/dead-letter"

// Type is the kind of destination an integration delivers to.
type Type string

// The integration types.
const (
	S3        Type = "s3"
	GCS       Type = "gcs"
	Amplitude Type = "amplitude"
	Segment   Type = "segment"
	Webhook   Type = "webhook"
)

var types = []string{string(S3), string(GCS), string(Amplitude), string(Segment), string(Webhook)}

// IsObjectStore reports whether t writes objects (s3, gcs) rather than HTTP requests.
func (t Type) IsObjectStore() bool { return t == S3 || t == GCS }

// Integration is one tenant's destination.
type Integration struct {
	ID     string `yaml:"id" json:"id"`
	Tenant string `yaml:"tenant" json:"tenant"`
	Type   Type   `yaml:"type" json:"type"`
	// Environments and Splits filter by environmentName and split; nil matches all.
	Environments []string           `yaml:"environments" json:"environments,omitempty"`
	Splits       []string           `yaml:"splits" json:"splits,omitempty"`
	Window       configkit.Duration `yaml:"window" json:"window"`
	// Shards splits each window into that many groups, each written or sent by one
	// worker at a time: it bounds the parallelism per destination and, for object
	// stores, is the number of objects per window. An object store that leaves it out
	// (0) has it sized by data in a backfill (the plan's estimate of its largest
	// window over object_bytes) and DefaultShards elsewhere: see ShardsOf.
	Shards int `yaml:"shards" json:"shards"`
	// AlertDelay is the delivery delay (delivery time minus impression time) above which
	// the stream job raises an alert; default twice the window.
	AlertDelay configkit.Duration `yaml:"alert_delay" json:"alert_delay"`

	S3        *s3io.Config        `yaml:"s3" json:"s3,omitempty"`
	GCS       *gcsio.Config       `yaml:"gcs" json:"gcs,omitempty"`
	Amplitude *amplitudeio.Config `yaml:"amplitude" json:"amplitude,omitempty"`
	Segment   *segmentio.Config   `yaml:"segment" json:"segment,omitempty"`
	Webhook   *webhookio.Config   `yaml:"webhook" json:"webhook,omitempty"`
	Delivery  *delivery.Config    `yaml:"delivery" json:"delivery,omitempty"`

	// Progress, set by the launcher and never by a config file, names the job under
	// which sinks count what they delivered in package progress (progress.DoneKey).
	Progress string `yaml:"-" json:"-"`
}

// Defaults (CONTRACT §2 for windows).
const (
	DefaultObjectWindow = 5 * time.Minute
	DefaultHTTPWindow   = 10 * time.Second
	DefaultShards       = 4
	MaxShards           = 1024
)

var idPattern = regexp.MustCompile(`^[a-z0-9-]+$`)

// validate fills defaults and records every problem.
func (c *Config) validate(p *configkit.Problems) {
	if c.DeadLetter == "" {
		c.DeadLetter = DefaultDeadLetter
	}
	if scheme, rest, ok := strings.Cut(c.DeadLetter, "://"); ok {
		if scheme != "s3" && scheme != "gs" {
			p.Addf("dead_letter", "%q must be a directory, s3://bucket/prefix or gs://bucket/prefix", c.DeadLetter)
		} else if bucket, _, _ := strings.Cut(rest, "/"); bucket == "" {
			p.Addf("dead_letter", "%q names no bucket", c.DeadLetter)
		}
	}
	c.Files.S3.Validate(p, "files.s3")
	if len(c.Integrations) == 0 {
		p.Addf("integrations", "at least one integration is required")
	}
	defer c.checkShared(p)
	seen := map[string]bool{}
	for i := range c.Integrations {
		in := &c.Integrations[i]
		path := integrationPath(i, in.ID)
		if in.ID != "" && seen[in.ID] {
			p.Addf(path+": id", "%q is used by another integration; ids must be unique", in.ID)
		}
		seen[in.ID] = true
		in.validate(p, path, c.AllowPrivateDestinations)
	}
}

// integrationPath names integration i in problems.
func integrationPath(i int, id string) string {
	if id == "" || !idPattern.MatchString(id) {
		return "integrations[" + itoa(i) + "]"
	}
	return `integration "` + id + `"`
}

func (in *Integration) validate(p *configkit.Problems, path string, allowPrivate bool) {
	if configkit.CheckRequired(p, path+": id", in.ID) && !idPattern.MatchString(in.ID) {
		p.Addf(path+": id", "%q may only hold a-z, 0-9 and -", in.ID)
	}
	configkit.CheckRequired(p, path+": tenant", in.Tenant)
	if !configkit.CheckRequired(p, path+": type", string(in.Type)) {
		return
	}
	configkit.CheckOneOf(p, path+": type", string(in.Type), types...)
	checkFilter(p, path+": environments", in.Environments)
	checkFilter(p, path+": splits", in.Splits)

	if in.Window == 0 {
		in.Window = configkit.Duration(DefaultHTTPWindow)
		if in.Type.IsObjectStore() {
			in.Window = configkit.Duration(DefaultObjectWindow)
		}
	}
	switch w := in.Window.D(); {
	case w < time.Second || w%time.Millisecond != 0:
		p.Addf(path+": window", "%v must be at least 1s, in whole milliseconds", w)
	case in.Type.IsObjectStore() && w%time.Second != 0:
		// Object names carry whole seconds: two windows within one second would
		// share a name.
		p.Addf(path+": window", "%v must be a whole number of seconds for an object store", w)
	}
	if in.AlertDelay == 0 {
		in.AlertDelay = 2 * in.Window
	}
	if in.AlertDelay < 0 {
		p.Addf(path+": alert_delay", "must be positive; got %v", in.AlertDelay.D())
	}
	if in.Shards == 0 && !in.Type.IsObjectStore() {
		in.Shards = DefaultShards
	}
	if in.Shards < 0 || in.Shards > MaxShards {
		p.Addf(path+": shards", "must be between 1 and %d; got %d", MaxShards, in.Shards)
	}

	// Exactly the section of the integration's type, and delivery only for HTTP sinks.
	sections := map[Type]bool{S3: in.S3 != nil, GCS: in.GCS != nil, Amplitude: in.Amplitude != nil,
		Segment: in.Segment != nil, Webhook: in.Webhook != nil}
	for t, present := range sections {
		if present && t != in.Type {
			p.Addf(path+": "+string(t), "section given, but the type is %q", in.Type)
		}
	}
	if _, known := sections[in.Type]; known && !sections[in.Type] {
		p.Addf(path+": "+string(in.Type), "section is required for type %q", in.Type)
	}
	if in.Delivery != nil {
		if in.Type.IsObjectStore() {
			p.Addf(path+": delivery", "applies only to HTTP integrations (amplitude, segment, webhook)")
		}
		in.Delivery.Validate(p, path+": delivery")
	}
	switch {
	case in.Type == S3 && in.S3 != nil:
		in.S3.Validate(p, path+": s3")
	case in.Type == GCS && in.GCS != nil:
		in.GCS.Validate(p, path+": gcs")
	case in.Type == Amplitude && in.Amplitude != nil:
		in.Amplitude.Validate(p, path+": amplitude", allowPrivate)
	case in.Type == Segment && in.Segment != nil:
		in.Segment.Validate(p, path+": segment", allowPrivate)
	case in.Type == Webhook && in.Webhook != nil:
		in.Webhook.Validate(p, path+": webhook", allowPrivate)
	}
}

// checkFilter refuses an empty list (omit the field to match everything) and empty entries.
func checkFilter(p *configkit.Problems, path string, values []string) {
	if values != nil && len(values) == 0 {
		p.Addf(path, "is an empty list, which would match nothing; omit it to match all")
	}
	if slices.Contains(values, "") {
		p.Addf(path, "holds an empty name")
	}
}

// ShardsOf is the shards in has: as configured, or DefaultShards for an object store
// that leaves them to the data and was not sized (a backfill sizes them first).
func ShardsOf(in Integration) int {
	if in.Shards == 0 {
		return DefaultShards
	}
	return in.Shards
}
