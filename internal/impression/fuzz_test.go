package impression

import (
	"errors"
	"testing"
)

// FuzzParse: whatever the line, Parse never panics, and what it accepts is a valid
// impression whose id and binary form are consistent.
func FuzzParse(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte(`{"tenant":"t","environmentName":"e","key":"k","split":"s","treatment":"on","time":0}`))
	f.Add([]byte("\xEF\xBB\xBF{}\r"))
	f.Add([]byte(`{"time":-0,"splitVersionNumber":-9223372036854775808}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		imp, err := Parse(line)
		var ie *InvalidError
		switch {
		case errors.Is(err, ErrBlank):
			return
		case errors.As(err, &ie):
			if ie.Reason == "" {
				t.Fatal("invalid without a reason")
			}
			return
		case err != nil:
			t.Fatalf("Parse returned %T %v; want nil, ErrBlank or *InvalidError", err, err)
		}
		if imp.Tenant == "" || imp.EnvironmentName == "" || imp.Key == "" || imp.Split == "" || imp.Treatment == "" || imp.Time < 0 {
			t.Fatalf("accepted an impression without its required fields: %+v", imp)
		}
		if imp.ID != imp.ComputeID() {
			t.Fatal("id differs from ComputeID")
		}
		b, _ := Marshal(imp)
		back, err := Unmarshal(b)
		if err != nil || back != imp {
			t.Fatalf("binary round trip: %+v, %v", back, err)
		}
	})
}

// FuzzUnmarshal: corrupt binary forms are refused, never a panic.
func FuzzUnmarshal(f *testing.F) {
	imp, _ := Parse([]byte(sample))
	b, _ := Marshal(imp)
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		// Varints may arrive in longer forms than Marshal writes (a zero as 0x80 0x00);
		// what matters is that what was accepted survives a round trip unchanged.
		if imp, err := Unmarshal(b); err == nil {
			again, err := Marshal(imp)
			if err != nil {
				t.Fatalf("accepted an impression that does not marshal: %v", err)
			}
			if back, err := Unmarshal(again); err != nil || back != imp {
				t.Fatalf("accepted an impression that does not round-trip: %v", err)
			}
		}
	})
}
