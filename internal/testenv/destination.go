package testenv

import (
	"testing"

	"github.com/outflow/outflow/internal/destsim"
)

// Destination starts a destination simulator on loopback, stopped when the test ends.
func Destination(t testing.TB, o destsim.Options) *destsim.Server {
	t.Helper()
	s, err := destsim.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
