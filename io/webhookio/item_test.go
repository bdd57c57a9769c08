package webhookio

import (
	"encoding/json"
	"testing"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/io/delivery/deliverytest"
	"github.com/outflow/outflow/transforms/encode"
)

// record is the struct webhook items were json.Marshal-ed from: what Item must keep
// writing, byte for byte (receivers verify signatures over these bodies).
type record struct {
	ID string `json:"id"`
	encode.Record
}

// FuzzItemAgrees: Item writes json.Marshal's bytes.
func FuzzItemAgrees(f *testing.F) {
	deliverytest.FuzzItems(f, func(imp *impression.Impression, _ bool) ([]byte, error) {
		return json.Marshal(record{imp.ID.String(), encode.NewRecord(imp)})
	}, func(imp *impression.Impression, _ bool) ([]byte, error) {
		return (&destination{}).Item(imp)
	})
}
