package encode

import "fmt"

// Format is how an object store integration encodes its data objects.
type Format string

// The object formats of CONTRACT §4.
const (
	NDJSON  Format = "ndjson"
	CSV     Format = "csv"
	Parquet Format = "parquet"
	// Binary is impressions in their Beam coding, for sinks that encode requests
	// themselves: HTTP destinations batch whole impressions.
	Binary Format = "binary"
)

// Formats lists the formats object stores write, for config validation.
var Formats = []string{string(NDJSON), string(CSV), string(Parquet)}

// Ext is the file name extension of a data object in format f.
func (f Format) Ext() string {
	switch f {
	case NDJSON:
		return ".ndjson.gz"
	case CSV:
		return ".csv.gz"
	case Parquet:
		return ".parquet"
	}
	panic(fmt.Sprintf("encode: unknown format %q", string(f)))
}

// FormatOf is the format of a data object by its extension (ObjectName.Ext).
func FormatOf(ext string) (Format, bool) {
	for _, f := range []Format{NDJSON, CSV, Parquet} {
		if f.Ext() == ext {
			return f, true
		}
	}
	return "", false
}

// ContentType is the media type of a data object in format f.
func (f Format) ContentType() string {
	if f == Parquet {
		return "application/vnd.apache.parquet"
	}
	return "application/gzip"
}

// Header returns what starts a data object in format f: the CSV header row, or nothing.
func Header(f Format) []byte {
	if f != CSV {
		return nil
	}
	var b []byte
	for i, c := range Columns {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendCSVField(b, c)
	}
	return append(b, '\n')
}
