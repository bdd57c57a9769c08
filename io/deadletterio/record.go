// Package deadletterio writes and reads the dead-letter store (CONTRACT §4): invalid
// input lines and undeliverable impressions, each with the reason, so nothing is lost.
package deadletterio

import (
	"encoding/json"
	"reflect"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
)

// Few records are dead-lettered, so their JSON line doubles as their Beam coding.
func init() {
	beam.RegisterCoder(reflect.TypeOf(Record{}), func(r Record) ([]byte, error) { return json.Marshal(r) },
		func(b []byte) (Record, error) {
			var r Record
			err := json.Unmarshal(b, &r)
			return r, err
		})
}

// Record is one line of the dead-letter store.
type Record struct {
	Integration string `json:"integration"`
	Reason      string `json:"reason"`
	Status      int    `json:"status"`
	Attempts    int    `json:"attempts"`
	// Raw is the input line of an invalid record. It is always written for records
	// without an impression, even when empty (a file that could not be read).
	Raw string `json:"raw"`
	// Source says where the record came from: "file:line" for input.
	Source string `json:"source,omitempty"`
}

// Invalid returns the record of an input line that is not a valid impression.
func Invalid(raw []byte, reason, source string) Record {
	return Record{Reason: reason, Raw: string(raw), Source: source}
}
