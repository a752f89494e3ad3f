package app

import (
	"context"
	"errors"
	"testing"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// failingDriver fails every PutContent, as a backend that is down does.
type failingDriver struct{ storagedriver.StorageDriver }

func (failingDriver) PutContent(context.Context, string, []byte) error {
	return errors.New("connection refused")
}

// TestStorageErrors checks that backend failures are counted by operation,
// and that a path not found and the errors a walk's callback returns are
// not.
func TestStorageErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	inner := inmemory.New()
	if err := inner.PutContent(ctx, "/dir/file", []byte("x")); err != nil {
		t.Fatal(err)
	}
	d, err := countStorageErrors(failingDriver{inner}, reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.GetContent(ctx, "/missing"); err == nil {
		t.Fatal("read of a missing path succeeded")
	}
	if err := d.PutContent(ctx, "/a", []byte("x")); err == nil {
		t.Fatal("write to a failing backend succeeded")
	}
	stop := errors.New("enough")
	if err := d.Walk(ctx, "/", func(storagedriver.FileInfo) error { return stop }); err == nil {
		t.Fatal("walk stopped by its callback returned no error")
	}
	if _, ok := d.(pinger); !ok {
		t.Error("the counting driver cannot be pinged")
	}
	errs := d.(*countingDriver).errs
	if n := testutil.ToFloat64(errs.WithLabelValues("write")); n != 1 {
		t.Errorf("write errors %v, want 1", n)
	}
	for _, op := range []string{"read", "walk"} {
		if n := testutil.ToFloat64(errs.WithLabelValues(op)); n != 0 {
			t.Errorf("%s errors %v, want 0", op, n)
		}
	}
}
