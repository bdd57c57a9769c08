package encode

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/outflow/outflow/internal/impression"
)

// TestRecordJSONNames: Record's json names are Columns, in order: NDJSON lines are
// written from Columns and read back into Record.
func TestRecordJSONNames(t *testing.T) {
	var names []string
	for f := range reflect.TypeFor[Record]().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		names = append(names, name)
	}
	if !slices.Equal(names, Columns) {
		t.Errorf("Record's json names\n%q\nColumns\n%q", names, Columns)
	}
}

// TestRecordFields: NewRecord puts each field of the table in the Record field of its
// name, and Impression gives back what NewRecord was given.
func TestRecordFields(t *testing.T) {
	var imp impression.Impression // every field a value of its own
	v := reflect.ValueOf(&imp).Elem()
	for i := range impression.Fields {
		if f := v.Field(i); f.Kind() == reflect.String {
			f.SetString("value-" + impression.Fields[i])
		} else {
			f.SetInt(int64(1000 + i))
		}
		if s, n, _ := imp.Value(i); s != "value-"+impression.Fields[i] && n != int64(1000+i) {
			t.Fatalf("Impression's field %d is not %s", i, impression.Fields[i])
		}
	}
	rec := NewRecord(&imp)
	rv := reflect.ValueOf(rec)
	for i := range Columns {
		s, n, isInt := imp.Value(i + 1)
		if got := rv.Field(i); (isInt && got.Int() != n) || (!isInt && got.String() != s) {
			t.Errorf("Record.%s = %v, want the impression's %s", rv.Type().Field(i).Name, got, Columns[i])
		}
	}
	if back := rec.Impression(imp.Tenant); back != imp {
		t.Errorf("Impression gives\n%+v\nwant\n%+v", back, imp)
	}
}

// TestAppendImpressionJSON: AppendImpressionJSON writes what encoding/json writes of
// the tenant and the Record.
func TestAppendImpressionJSON(t *testing.T) {
	type withTenant struct {
		Tenant string `json:"tenant"`
		Record
	}
	r := rand.New(rand.NewPCG(7, 1))
	for range 2000 {
		imp := randomImpression(r, 0)
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(withTenant{imp.Tenant, NewRecord(&imp)}); err != nil {
			t.Fatal(err)
		}
		if got := AppendImpressionJSON(nil, &imp); !bytes.Equal(got, bytes.TrimSuffix(want.Bytes(), []byte("\n"))) {
			t.Fatalf("%+v\nwrites %s\nwant   %s", imp, got, want.Bytes())
		}
	}
}
