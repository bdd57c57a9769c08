// Package impression holds the impression model of CONTRACT §1: the record, its
// deterministic id, the NDJSON parser and the compact binary form Beam carries.
package impression

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"unsafe"

	"github.com/google/uuid"
)

// Impression is one SDK impression: which key saw which treatment of which split, when.
type Impression struct {
	Tenant             string
	EnvironmentID      string
	EnvironmentName    string
	Key                string
	BucketingKey       string
	Split              string
	Treatment          string
	Label              string
	Time               int64 // Unix ms
	SplitVersionNumber int64
	MachineName        string
	MachineIP          string
	SDK                string
	SDKVersion         string
	Properties         string

	// ID is the UUIDv5 of the canonical fields (see ComputeID), set by Parse.
	ID uuid.UUID
	// Origin orders copies of one impression: the copy with the lowest Origin is the
	// "first seen" that CONTRACT §1 keeps. It is (source file hash << 32 | line), so
	// within one file the earliest line wins.
	Origin uint64
	// ReceivedAt is when outflow read the impression, Unix ms (Parquet's
	// receptionTimestamp).
	ReceivedAt int64
}

// namespace is the UUIDv5 namespace of impression ids (CONTRACT §1).
// MaxTime is the latest impression time, in Unix ms: 9999-12-31T23:59:59.999Z. Object
// names carry times as four-digit years; an impression after that could not be named.
const MaxTime = 253402300799999

var namespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("urn:outflow:impression"))

// sep joins the canonical fields of the id.
const sep = 0x1F

// ComputeID returns the impression's deterministic id: the same impression gets the
// same id in every run and every destination.
func (imp *Impression) ComputeID() uuid.UUID {
	return uuid.NewSHA1(namespace, appendIDName(make([]byte, 0, 256), imp))
}

// appendIDName appends the name the id is made from (CONTRACT §1): the fields joined
// with sep.
func appendIDName(b []byte, imp *Impression) []byte {
	for _, s := range [...]string{imp.Tenant, imp.EnvironmentID, imp.EnvironmentName,
		imp.Key, imp.BucketingKey, imp.Split, imp.Treatment, imp.Label} {
		b = append(b, s...)
		b = append(b, sep)
	}
	b = strconv.AppendInt(b, imp.Time, 10)
	b = append(b, sep)
	return strconv.AppendInt(b, imp.SplitVersionNumber, 10)
}

// Digest names a set of impressions by their ids, in the order given: 16 hex digits
// of FNV-64a. Batch, object and pane names use it to stay apart and deterministic.
func Digest(ids []uuid.UUID) string {
	h := fnv.New64a()
	if len(ids) > 0 {
		// The ids lie end to end: one Write of all their bytes, not a call per id.
		h.Write(unsafe.Slice(&ids[0][0], len(ids)*len(ids[0])))
	}
	return fmt.Sprintf("%016x", h.Sum64())
}
