package encode

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/outflow/outflow/internal/impression"
)

// referenceParquetRow is how rows were made before the column table: field by field
// into ParquetRow, written by parquet-go's generic writer. writeParquet must give
// the same bytes.
func referenceParquetRow(imp *impression.Impression) ParquetRow {
	return ParquetRow{Key: imp.Key, Label: imp.Label, Treatment: imp.Treatment, SplitName: imp.Split,
		SplitVersion: imp.SplitVersionNumber, EnvironmentID: imp.EnvironmentID, SDK: imp.SDK,
		SDKVersion: imp.SDKVersion, Timestamp: imp.Time, ReceptionTimestamp: imp.ReceivedAt,
		EnvironmentName: imp.EnvironmentName, BucketingKey: imp.BucketingKey, MachineName: imp.MachineName,
		MachineIP: imp.MachineIP, Properties: imp.Properties}
}

func referenceWriteParquet(c *Chunk, es []entry, keep []bool, w io.Writer) error {
	pw := parquet.NewGenericWriter[ParquetRow](w, parquet.Compression(&parquet.Snappy),
		parquet.MaxRowsPerRowGroup(rowGroupRows), parquet.CreatedBy("outflow", "", ""))
	rows := make([]ParquetRow, 0, 1024)
	flush := func() error {
		_, err := pw.Write(rows)
		rows = rows[:0]
		return err
	}
	err := c.each(es, keep, func(rec []byte) error {
		imp, err := impression.Unmarshal(rec)
		if err != nil {
			return err
		}
		if rows = append(rows, referenceParquetRow(&imp)); len(rows) == cap(rows) {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if cerr := pw.Close(); err == nil {
		err = cerr
	}
	return err
}

// parquetStrings are the strings impressions are made of: empty, unicode, bytes that
// are not UTF-8, JSON and CSV specials, and long ones that fill pages.
var parquetStrings = []string{"", "", "a", "user-1042", "production", "日本語のキー", "emoji 🎉👩‍💻", "<b>&amp;</b>",
	"\u2028\u2029", "nul\x00tab\tnl\n", "\xff\xfe not utf-8", `{"plan":"pro","n":1}`, `"quoted", comma`,
	strings.Repeat("long ", 200), strings.Repeat("é", 1000)}

var parquetInts = []int64{0, 0, 1, -1, 1767225600123, 1767000000000, math.MaxInt64, math.MinInt64, math.MaxInt32 + 1}

// randomImpression returns an impression with every field drawn from the lists above
// or at random.
func randomImpression(r *rand.Rand, origin uint64) impression.Impression {
	str := func() string {
		if r.IntN(4) == 0 {
			return fmt.Sprintf("v%d", r.Int64())
		}
		return parquetStrings[r.IntN(len(parquetStrings))]
	}
	num := func() int64 {
		if r.IntN(4) == 0 {
			return r.Int64() - math.MaxInt64/2
		}
		return parquetInts[r.IntN(len(parquetInts))]
	}
	imp := impression.Impression{Tenant: str(), EnvironmentID: str(), EnvironmentName: str(), Key: str(),
		BucketingKey: str(), Split: str(), Treatment: str(), Label: str(), Time: num(), SplitVersionNumber: num(),
		MachineName: str(), MachineIP: str(), SDK: str(), SDKVersion: str(), Properties: str(),
		Origin: origin, ReceivedAt: num()}
	imp.ID = imp.ComputeID()
	return imp
}

// parquetChunk is a Parquet chunk of n random impressions, some of them copies, and
// what FinishObject gives writeParquet for it.
func parquetChunk(t *testing.T, seed uint64, n int) (*Chunk, []entry, []bool, []impression.Impression) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	fn := &chunkFn{Format: Parquet}
	c := fn.CreateAccumulator()
	var imps []impression.Impression
	for i := range n {
		imp := randomImpression(r, uint64(n-i))
		if i > 0 && r.IntN(10) == 0 { // a copy of an earlier impression
			imp = imps[r.IntN(len(imps))]
			imp.Origin, imp.MachineName = uint64(n-i), "copy"
		}
		imps = append(imps, imp)
		c = fn.AddInput(c, imp)
	}
	c = fn.ExtractOutput(c)
	es, err := c.entries()
	if err != nil {
		t.Fatal(err)
	}
	return &c, es, firstSeen(es).keep, imps
}

// TestParquetBytesUnchanged: objects written from the column table are byte for byte
// those the ParquetRow writer wrote.
func TestParquetBytesUnchanged(t *testing.T) {
	sizes := []int{0, 1, 2, 1023, 1024, 1025, 5000}
	if !testing.Short() {
		sizes = append(sizes, rowGroupRows*5/4) // more than one row group, copies dropped
	}
	for i, n := range sizes {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c, es, keep, _ := parquetChunk(t, uint64(i), n)
			var got, want bytes.Buffer
			if err := writeParquet(c, es, keep, &got); err != nil {
				t.Fatal(err)
			}
			if err := referenceWriteParquet(c, es, keep, &want); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want.Bytes()) {
				at := 0
				for at < min(got.Len(), want.Len()) && got.Bytes()[at] == want.Bytes()[at] {
					at++
				}
				t.Fatalf("%d bytes, the ParquetRow writer %d; first difference at byte %d", got.Len(), want.Len(), at)
			}
			if n > rowGroupRows {
				f, err := parquet.OpenFile(bytes.NewReader(got.Bytes()), int64(got.Len()))
				if err != nil || len(f.RowGroups()) < 2 {
					t.Fatalf("want several row groups: %v", err)
				}
			}
		})
	}
}

// TestParquetRowColumns: ParquetRow, which ReadParquet reads into, has the columns of
// parquetColumns, in order and of the same types, and its fields and Record give
// back the impression fields the table put in them.
func TestParquetRowColumns(t *testing.T) {
	row, table := parquet.SchemaOf(ParquetRow{}).Fields(), parquetSchema.Fields()
	for i := range max(len(row), len(table)) {
		switch {
		case i >= len(row):
			t.Errorf("column %d: ParquetRow has none, the table %s", i, table[i].Name())
		case i >= len(table):
			t.Errorf("column %d: ParquetRow has %s, the table none", i, row[i].Name())
		case row[i].Name() != table[i].Name() || row[i].Type().String() != table[i].Type().String():
			t.Errorf("column %d: ParquetRow has %s %v, the table %s %v",
				i, row[i].Name(), row[i].Type(), table[i].Name(), table[i].Type())
		}
	}

	c, es, keep, imps := parquetChunk(t, 99, 300)
	var b bytes.Buffer
	if err := writeParquet(c, es, keep, &b); err != nil {
		t.Fatal(err)
	}
	rows, err := ReadParquet(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	var kept []impression.Impression // in the chunk's order, which is imps'
	for i := range es {
		if keep == nil || keep[i] {
			kept = append(kept, imps[i])
		}
	}
	if len(rows) != len(kept) {
		t.Fatalf("%d rows, want %d", len(rows), len(kept))
	}
	for i := range rows {
		if rows[i] != referenceParquetRow(&kept[i]) {
			t.Errorf("row %d\n%+v\nwant\n%+v", i, rows[i], referenceParquetRow(&kept[i]))
		}
		if rows[i].Record() != NewRecord(&kept[i]) {
			t.Errorf("row %d's record\n%+v\nwant\n%+v", i, rows[i].Record(), NewRecord(&kept[i]))
		}
	}
}
