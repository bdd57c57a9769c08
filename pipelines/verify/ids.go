package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"strconv"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/google/uuid"
)

func init() {
	beam.RegisterCoder(reflect.TypeOf(idSet{}), marshalIDSet, unmarshalIDSet)
}

// idSet sums up a set of distinct impression ids: how many, and a digest that does
// not depend on their order. The digest is two sums (mod 2^64) of the ids' first and
// last 8 bytes, so sets counted apart (per shard, per bundle) add up to the digest of
// their union, as long as no id is in two of them: the recount de-duplicates within a
// shard, and an id always falls in the same shard. Ids are SHA-1 based (UUIDv5):
// another set of the same size has the same digest with a chance of about 2^-122.
type idSet struct {
	Count  int64
	Hi, Lo uint64
}

// add counts id, which must not be in the set yet.
func (s *idSet) add(id uuid.UUID) {
	s.Count++
	s.Hi += binary.BigEndian.Uint64(id[:8])
	s.Lo += binary.BigEndian.Uint64(id[8:])
}

// plus returns the union of two sets with no id in common.
func (s idSet) plus(o idSet) idSet {
	return idSet{Count: s.Count + o.Count, Hi: s.Hi + o.Hi, Lo: s.Lo + o.Lo}
}

// Digest is the set's digest as 32 hex digits.
func (s idSet) Digest() string { return fmt.Sprintf("%016x%016x", s.Hi, s.Lo) }

// parseIDSet is the inverse of count and Digest.
func parseIDSet(count, digest string) (idSet, error) {
	n, err := strconv.ParseInt(count, 10, 64)
	if err != nil || n < 0 {
		return idSet{}, fmt.Errorf("bad count %q", count)
	}
	if len(digest) != 32 {
		return idSet{}, fmt.Errorf("bad digest %q", digest)
	}
	hi, err1 := strconv.ParseUint(digest[:16], 16, 64)
	lo, err2 := strconv.ParseUint(digest[16:], 16, 64)
	if err1 != nil || err2 != nil {
		return idSet{}, fmt.Errorf("bad digest %q", digest)
	}
	return idSet{Count: n, Hi: hi, Lo: lo}, nil
}

func marshalIDSet(s idSet) []byte {
	b := make([]byte, 24)
	binary.BigEndian.PutUint64(b, uint64(s.Count))
	binary.BigEndian.PutUint64(b[8:], s.Hi)
	binary.BigEndian.PutUint64(b[16:], s.Lo)
	return b
}

func unmarshalIDSet(b []byte) (idSet, error) {
	if len(b) != 24 {
		return idSet{}, errors.New("verify: corrupt idSet")
	}
	return idSet{Count: int64(binary.BigEndian.Uint64(b)), Hi: binary.BigEndian.Uint64(b[8:]),
		Lo: binary.BigEndian.Uint64(b[16:])}, nil
}
