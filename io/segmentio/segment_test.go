package segmentio_test

import (
	"encoding/json"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	"github.com/outflow/outflow/internal/configkit"
	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/io/delivery"
	"github.com/outflow/outflow/io/delivery/deliverytest"
	"github.com/outflow/outflow/io/segmentio"
)

func TestMain(m *testing.M) { ptest.Main(m) }

const writeKey = "seg-write-key"

func TestConformance(t *testing.T) {
	deliverytest.Run(t, deliverytest.Sink{
		Sim: destsim.Options{Kind: destsim.Segment, WriteKey: writeKey},
		Target: func(id, url string) delivery.Target {
			raw, _ := json.Marshal(segmentio.Config{WriteKey: configkit.Secret(writeKey), Endpoint: url, Event: segmentio.DefaultEvent})
			return delivery.Target{ID: id, Kind: segmentio.Kind, Policy: segmentio.Defaults, Settings: raw}
		},
		Write: segmentio.Write,
	})
}
