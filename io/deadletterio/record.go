// Package deadletterio writes and reads the dead-letter store (CONTRACT §4): invalid
// input lines and undeliverable impressions, each with the reason, so nothing is lost.
package deadletterio

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/transforms/encode"
)

// Few records are dead-lettered, so their JSON line doubles as their Beam coding,
// after their origin. The JSON keeps every byte of a record: a raw line that is not
// UTF-8 travels in RawBase64.
func init() {
	beam.RegisterCoder(reflect.TypeOf(Record{}), encodeRecord, decodeRecord)
}

func encodeRecord(r Record) ([]byte, error) {
	line, err := json.Marshal(r)
	return append(binary.AppendUvarint(nil, r.Origin), line...), err
}

func decodeRecord(b []byte) (Record, error) {
	var r Record
	origin, k := binary.Uvarint(b)
	if k <= 0 {
		return r, errors.New("deadletterio: corrupt record")
	}
	err := json.Unmarshal(b[k:], &r)
	r.Origin = origin
	return r, err
}

// Record is one line of the dead-letter store: an input line that is not a valid
// impression (Raw), an input file that could not be read to the end (FileError), or
// an impression that could not be delivered (Impression).
type Record struct {
	Integration string `json:"integration"`
	Reason      string `json:"reason"`
	Status      int    `json:"status"`
	Attempts    int    `json:"attempts"`
	// Raw is the input line of an invalid record, whole (no length limit). A line that
	// is not valid UTF-8 cannot be a JSON string: Raw then holds a readable copy, each
	// run of invalid bytes replaced by U+FFFD, and RawBase64 the exact bytes. RawBytes
	// gives back the exact line either way.
	Raw string `json:"raw"`
	// RawBase64 is the exact input line when it is not valid UTF-8 (in JSON, standard
	// base64); nil otherwise.
	RawBase64 []byte `json:"raw_base64,omitempty"`
	// FileError marks the record of an input file that could not be read to the end
	// (FileError): Reason says why and where reading stopped; there is no Raw.
	FileError bool `json:"file_error,omitempty"`
	// Impression is the undeliverable impression, with every CONTRACT §1 field.
	Impression *Impression `json:"impression,omitempty"`
	// Source says where the record came from: "file:line" for an input line, the file
	// for a file error, the batch id for an undeliverable batch.
	Source string `json:"source,omitempty"`
	// Origin is the input record's (impression.Impression.Origin), for package ack;
	// not stored.
	Origin uint64 `json:"-"`
}

// Impression is an impression as CONTRACT §1 writes it, tenant included. It is read
// by its tags, which TestImpressionFieldNames holds to the field table, and written
// by MarshalJSON.
type Impression struct {
	Tenant string `json:"tenant"`
	encode.Record
}

// MarshalJSON writes the impression from the field table (impression.Fields), as
// NDJSON objects are written, so the two cannot drift apart. The bytes are those
// encoding/json writes of the struct (TestImpressionJSON).
func (i Impression) MarshalJSON() ([]byte, error) {
	imp := i.Record.Impression(i.Tenant)
	return encode.AppendImpressionJSON(nil, &imp), nil
}

// MarshalJSON writes "raw" for invalid input and "impression" instead for
// undeliverable impressions, as CONTRACT §4 pins.
func (r Record) MarshalJSON() ([]byte, error) {
	type plain Record // without this method
	var v any = plain(r)
	if r.Impression != nil {
		v = struct {
			plain
			Raw string `json:"raw,omitempty"`
		}{plain: plain(r)}
	}
	// Reasons quote answers and lines: keep their <, > and & readable.
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// RawBytes returns the exact input line of an invalid record: RawBase64 when the line
// is not UTF-8, else Raw.
func (r Record) RawBytes() []byte {
	if r.RawBase64 != nil {
		return r.RawBase64
	}
	return []byte(r.Raw)
}

// Invalid returns the record of an input line that is not a valid impression, read
// from the input record at origin. raw is kept whole and byte for byte (see Raw).
func Invalid(raw []byte, reason, source string, origin uint64) Record {
	r := Record{Reason: reason, Raw: string(raw), Source: source, Origin: origin}
	if !utf8.Valid(raw) {
		r.Raw = strings.ToValidUTF8(r.Raw, "\uFFFD")
		r.RawBase64 = bytes.Clone(raw)
	}
	return r
}

// FileError returns the record of an input file that could not be read to the end
// (the lines read before stand): reason says why and after which line.
func FileError(path, reason string, origin uint64) Record {
	return Record{Reason: reason, Source: path, FileError: true, Origin: origin}
}

// Undeliverable returns the record of an impression that could not be delivered.
func Undeliverable(integration string, imp *impression.Impression, status, attempts int, reason, source string) Record {
	return Record{Integration: integration, Reason: reason, Status: status, Attempts: attempts, Source: source,
		Impression: &Impression{Tenant: imp.Tenant, Record: encode.NewRecord(imp)}, Origin: imp.Origin}
}
