package registry

import (
	"strings"
	"testing"
)

func TestRegistry(t *testing.T) {
	r := New[int]("store")
	r.Register("s3", 1)
	r.Register("gcs", 2)
	if v, err := r.Get("gcs"); v != 2 || err != nil {
		t.Errorf("Get(gcs) = %d, %v", v, err)
	}
	if _, err := r.Get("ftp"); err == nil || !strings.Contains(err.Error(), `no store of kind "ftp" (known: [gcs s3])`) {
		t.Errorf("Get(ftp) error %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("registering a kind twice did not panic")
		}
	}()
	r.Register("s3", 3)
}
