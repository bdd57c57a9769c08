package config

import (
	"net/url"
	"strings"

	"github.com/outflow/outflow/internal/configkit"
)

// destination is where an integration's impressions land, for telling whether two
// integrations of different tenants would share one.
type destination struct {
	kind   string // s3, gcs, amplitude, segment, webhook
	place  string // endpoint and bucket, URL, or key
	prefix string // object stores: the key prefix, "" for none
	field  string // the field that names it, for the message
}

func (in *Integration) destination() (destination, bool) {
	switch {
	case in.S3 != nil:
		return destination{"s3", in.S3.Endpoint + " " + in.S3.Bucket, in.S3.Prefix, "s3.prefix"}, true
	case in.GCS != nil:
		return destination{"gcs", in.GCS.Endpoint + " " + in.GCS.Bucket, in.GCS.Prefix, "gcs.prefix"}, true
	case in.Amplitude != nil:
		return destination{"amplitude", in.Amplitude.Endpoint + " " + in.Amplitude.APIKey.Reveal(), "", "amplitude.api_key"}, true
	case in.Segment != nil:
		return destination{"segment", in.Segment.Endpoint + " " + in.Segment.WriteKey.Reveal(), "", "segment.write_key"}, true
	case in.Webhook != nil:
		return destination{"webhook", normalizeURL(in.Webhook.URL), "", "webhook.url"}, true
	}
	return destination{}, false
}

// overlaps reports whether one object prefix holds the other's objects: "a" holds
// "a/b", but not "ab".
func overlaps(a, b string) bool {
	return a == "" || b == "" || a == b || strings.HasPrefix(b, a+"/") || strings.HasPrefix(a, b+"/")
}

func normalizeURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	u.Scheme, u.Host = strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u.String()
}

// checkShared refuses two integrations of different tenants that deliver to the same
// place (a bucket with one prefix inside the other, a webhook URL, an Amplitude or
// Segment key): one tenant would receive, or be able to read, the other's impressions.
// Object store integrations of one tenant may not share a prefix either.
func (c *Config) checkShared(p *configkit.Problems) {
	for i := range c.Integrations {
		a := &c.Integrations[i]
		da, ok := a.destination()
		if !ok {
			continue
		}
		for j := range i {
			b := &c.Integrations[j]
			db, ok := b.destination()
			objects := da.kind == "s3" || da.kind == "gcs"
			if !ok || (a.Tenant == b.Tenant && !objects) || da.kind != db.kind || da.place != db.place || !overlaps(da.prefix, db.prefix) {
				continue
			}
			switch {
			case a.Tenant != b.Tenant && objects:
				p.Addf(integrationPath(i, a.ID)+": "+da.field, "%q overlaps the prefix %q in the same bucket of integration %q of tenant %q; "+
					"tenants must not share a destination", da.prefix, db.prefix, b.ID, b.Tenant)
			case a.Tenant != b.Tenant:
				p.Addf(integrationPath(i, a.ID)+": "+da.field, "is the destination of integration %q of tenant %q; "+
					"tenants must not share a destination", b.ID, b.Tenant)
			default:
				// A prefix holds each impression once, whatever wrote it (CONTRACT §4):
				// two integrations in one would each leave out what the other stored.
				p.Addf(integrationPath(i, a.ID)+": "+da.field, "%q overlaps the prefix %q in the same bucket of integration %q; "+
					"each object store integration needs a prefix of its own", da.prefix, db.prefix, b.ID)
			}
		}
	}
}
