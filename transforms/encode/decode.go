package encode

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/klauspost/compress/gzip"
)

// ReadObject decodes a data object back into records, for tests and for checking
// what a destination holds.
func ReadObject(r io.Reader, f Format) ([]Record, error) {
	if f == Parquet {
		b, err := io.ReadAll(r)
		if err != nil {
			return nil, err
		}
		rows, err := ReadParquet(b)
		recs := make([]Record, len(rows))
		for i := range rows {
			recs[i] = rows[i].Record()
		}
		return recs, err
	}
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("encode: not gzip: %w", err)
	}
	defer zr.Close()
	var recs []Record
	switch f {
	case NDJSON:
		sc := bufio.NewScanner(zr)
		sc.Buffer(nil, 4<<20)
		for sc.Scan() {
			var rec Record
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				return nil, fmt.Errorf("encode: line %d: %w", len(recs)+1, err)
			}
			recs = append(recs, rec)
		}
		return recs, sc.Err()
	case CSV:
		cr := csv.NewReader(zr)
		cr.FieldsPerRecord = len(Columns)
		header, err := cr.Read()
		if err != nil {
			return nil, fmt.Errorf("encode: csv header: %w", err)
		}
		if !slices.Equal(header, Columns) {
			return nil, fmt.Errorf("encode: csv header %q, want %q", header, Columns)
		}
		for {
			row, err := cr.Read()
			if err == io.EOF {
				return recs, nil
			}
			if err != nil {
				return nil, fmt.Errorf("encode: csv: %w", err)
			}
			t, err1 := strconv.ParseInt(row[7], 10, 64)
			v, err2 := strconv.ParseInt(row[8], 10, 64)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("encode: csv row %d: bad time or splitVersionNumber", len(recs)+2)
			}
			recs = append(recs, Record{row[0], row[1], row[2], row[3], row[4], row[5], row[6], t, v,
				row[9], row[10], row[11], row[12], row[13]})
		}
	}
	return nil, fmt.Errorf("encode: cannot read format %q", f)
}
