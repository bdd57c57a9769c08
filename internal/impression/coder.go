package impression

import (
	"encoding/binary"
	"errors"
	"reflect"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
)

// Beam would otherwise carry Impression with its reflective schema coder; this compact
// form (length-prefixed strings, varints) is several times cheaper across a shuffle.
func init() {
	beam.RegisterCoder(reflect.TypeOf(Impression{}), Marshal, Unmarshal)
}

// Marshal returns the binary form of imp.
func Marshal(imp Impression) ([]byte, error) {
	return AppendBinary(make([]byte, 0, 64+imp.size()), imp), nil
}

func (imp *Impression) size() int {
	return len(imp.Tenant) + len(imp.EnvironmentID) + len(imp.EnvironmentName) + len(imp.Key) +
		len(imp.BucketingKey) + len(imp.Split) + len(imp.Treatment) + len(imp.Label) +
		len(imp.MachineName) + len(imp.MachineIP) + len(imp.SDK) + len(imp.SDKVersion) +
		len(imp.Properties)
}

// AppendBinary appends the binary form of imp to b.
func AppendBinary(b []byte, imp Impression) []byte {
	b = append(b, imp.ID[:]...)
	b = binary.AppendUvarint(b, imp.Origin)
	b = binary.AppendVarint(b, imp.Time)
	b = binary.AppendVarint(b, imp.SplitVersionNumber)
	b = binary.AppendVarint(b, imp.ReceivedAt)
	for _, s := range imp.strings() {
		b = binary.AppendUvarint(b, uint64(len(*s)))
		b = append(b, *s...)
	}
	return b
}

// strings lists the string fields in their binary order.
func (imp *Impression) strings() [13]*string {
	return [...]*string{&imp.Tenant, &imp.EnvironmentID, &imp.EnvironmentName, &imp.Key,
		&imp.BucketingKey, &imp.Split, &imp.Treatment, &imp.Label, &imp.MachineName,
		&imp.MachineIP, &imp.SDK, &imp.SDKVersion, &imp.Properties}
}

var errCorrupt = errors.New("impression: corrupt binary form")

// Unmarshal decodes the binary form written by Marshal.
func Unmarshal(b []byte) (Impression, error) {
	imp, n, err := decode(b)
	if err == nil && n != len(b) {
		err = errCorrupt
	}
	return imp, err
}

// decode decodes one binary form from the front of b and says how long it was.
func decode(b []byte) (imp Impression, n int, err error) {
	in := len(b)
	if len(b) < len(imp.ID) {
		return imp, 0, errCorrupt
	}
	copy(imp.ID[:], b)
	b = b[len(imp.ID):]
	var k int
	if imp.Origin, k = binary.Uvarint(b); k <= 0 {
		return imp, 0, errCorrupt
	}
	b = b[k:]
	if imp.Time, k = binary.Varint(b); k <= 0 {
		return imp, 0, errCorrupt
	}
	b = b[k:]
	if imp.SplitVersionNumber, k = binary.Varint(b); k <= 0 {
		return imp, 0, errCorrupt
	}
	b = b[k:]
	if imp.ReceivedAt, k = binary.Varint(b); k <= 0 {
		return imp, 0, errCorrupt
	}
	b = b[k:]
	// First find the extent of the strings, then copy them in one allocation.
	var lens [13]int
	end := 0
	for i := range lens {
		l, k := binary.Uvarint(b[end:])
		if k <= 0 || uint64(len(b)-end-k) < l {
			return imp, 0, errCorrupt
		}
		lens[i] = int(l)
		end += k + int(l)
	}
	all := string(b[:end])
	pos := 0
	for i, s := range imp.strings() {
		_, k := binary.Uvarint(b[pos:])
		*s = all[pos+k : pos+k+lens[i]]
		pos += k + lens[i]
	}
	return imp, in - len(b) + end, nil
}

// Next decodes the first of a run of concatenated binary forms and returns the rest.
func Next(b []byte) (Impression, []byte, error) {
	imp, n, err := decode(b)
	if err != nil {
		return imp, nil, err
	}
	return imp, b[n:], nil
}
