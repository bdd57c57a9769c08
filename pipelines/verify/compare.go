package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"
	"time"
)

// The statuses of a window. A window gets the first that applies, in this order.
const (
	// MISSING: impressions are expected, nothing is stored.
	statusMissing = "MISSING"
	// SHORT: fewer distinct impressions are stored than expected. Some of those stored
	// may also not belong there: counts alone cannot tell.
	statusShort = "SHORT"
	// WRONG: as many distinct impressions as expected but not the same ones (the
	// digests differ): some are missing, and as many others are there instead.
	statusWrong = "WRONG"
	// UNEXPECTED: more distinct impressions are stored than expected (impressions the
	// input does not route to this integration and window), or records are filed
	// outside their object's time range.
	statusUnexpected = "UNEXPECTED"
	// DUPLICATED: an impression is stored more than once, in one object or in two of
	// the window's objects.
	statusDuplicated = "DUPLICATED"
	statusOK         = "ok"
)

// status compares what a window should hold with what is stored.
func status(want idSet, got stored) string {
	switch {
	case want.Count > 0 && got.records == 0:
		return statusMissing
	case got.ids.Count < want.Count:
		return statusShort
	case got.ids.Count == want.Count && got.ids != want:
		return statusWrong
	case got.ids.Count > want.Count || got.strays > 0:
		return statusUnexpected
	case got.records > got.ids.Count:
		return statusDuplicated
	}
	return statusOK
}

// row is one window's comparison: a line of the table, and of --out.
type row struct {
	Integration string    `json:"integration"`
	Start       time.Time `json:"window_start"`
	End         time.Time `json:"window_end"`
	Expected    int64     `json:"expected"` // distinct impressions the input routes to the window
	Found       int64     `json:"found"`    // records stored
	Unique      int64     `json:"unique"`   // distinct impressions stored
	Strays      int64     `json:"strays"`   // records outside their object's time range
	Objects     int       `json:"objects"`
	// The digests of the expected and the stored distinct impressions' ids.
	ExpectedDigest string `json:"expected_digest"`
	FoundDigest    string `json:"found_digest"`
	Status         string `json:"status"`
}

// compare lines up an integration's expected and stored windows.
func compare(id string, expected map[window]idSet, found map[window]*stored) []row {
	windows := map[window]bool{}
	for w := range expected {
		windows[w] = true
	}
	for w := range found {
		windows[w] = true
	}
	var rows []row
	for w := range windows {
		want, got := expected[w], stored{}
		if found[w] != nil {
			got = *found[w]
		}
		rows = append(rows, row{Integration: id, Start: time.UnixMilli(w.Start).UTC(), End: time.UnixMilli(w.End).UTC(),
			Expected: want.Count, Found: got.records, Unique: got.ids.Count, Strays: got.strays, Objects: got.objects,
			ExpectedDigest: want.Digest(), FoundDigest: got.ids.Digest(), Status: status(want, got)})
	}
	slices.SortFunc(rows, func(a, b row) int { return a.Start.Compare(b.Start) })
	return rows
}

// printRows writes the table (every window with all, else those that differ) and
// returns how many windows differ.
func printRows(w io.Writer, rows []row, all bool) int {
	bad := 0
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "integration\twindow\texpected\tfound\tunique\tstrays\tobjects\tids\tstatus")
	for _, r := range rows {
		if r.Status != statusOK {
			bad++
		} else if !all {
			continue
		}
		ids := "same"
		if r.ExpectedDigest != r.FoundDigest {
			ids = "differ"
		}
		fmt.Fprintf(tw, "%s\t%s/%v\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", r.Integration, r.Start.Format(time.RFC3339),
			r.End.Sub(r.Start), r.Expected, r.Found, r.Unique, r.Strays, r.Objects, ids, r.Status)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d windows checked, %d differ\n", len(rows), bad)
	return bad
}

// writeRows writes every row to path as JSON lines.
func writeRows(path string, rows []row) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
