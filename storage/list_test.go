package storage

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/google/go-cmp/cmp"

	"github.com/portcullis/portcullis/storage/miniotest"
)

// walkEntry is what a test records of each FileInfo that Walk reports.
type walkEntry struct {
	Path  string
	IsDir bool
}

// TestWalkAndList checks Walk and List at the bucket root (empty prefix),
// where the pending-state prefix lives beside the data and must stay hidden.
func TestWalkAndList(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	d := newTestDriver(t, srv, Options{})
	ctx := t.Context()
	for _, p := range []string{"/r/a/1", "/r/a/2", "/r/b/c/3", "/r/b/d", "/r/e", "/s/x"} {
		if err := d.PutContent(ctx, p, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	// An uncommitted writer leaves state under the pending prefix.
	w, err := d.Writer(ctx, "/r/b/pending", false)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, []byte("tail"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	walk := func(from string, f func(storagedriver.FileInfo) error, opts ...func(*storagedriver.WalkOptions)) ([]walkEntry, error) {
		var got []walkEntry
		err := d.Walk(ctx, from, func(fi storagedriver.FileInfo) error {
			got = append(got, walkEntry{fi.Path(), fi.IsDir()})
			if f != nil {
				return f(fi)
			}
			return nil
		}, opts...)
		return got, err
	}
	dir := func(p string) walkEntry { return walkEntry{p, true} }
	file := func(p string) walkEntry { return walkEntry{p, false} }

	got, err := walk("/", nil)
	want := []walkEntry{
		dir("/r"), dir("/r/a"), file("/r/a/1"), file("/r/a/2"),
		dir("/r/b"), dir("/r/b/c"), file("/r/b/c/3"), file("/r/b/d"), file("/r/e"),
		dir("/s"), file("/s/x"),
	}
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Walk(/) (-want +got):\n%s", diff)
	}

	got, err = walk("/r", func(fi storagedriver.FileInfo) error {
		if fi.Path() == "/r/b" {
			return storagedriver.ErrSkipDir
		}
		return nil
	})
	want = []walkEntry{dir("/r/a"), file("/r/a/1"), file("/r/a/2"), dir("/r/b"), file("/r/e")}
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Walk(/r) skipping /r/b (-want +got):\n%s", diff)
	}

	got, err = walk("/r", func(fi storagedriver.FileInfo) error {
		if fi.Path() == "/r/a/1" {
			return storagedriver.ErrFilledBuffer
		}
		return nil
	})
	want = []walkEntry{dir("/r/a"), file("/r/a/1")}
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Walk(/r) filling the buffer (-want +got):\n%s", diff)
	}

	got, err = walk("/r", nil, storagedriver.WithStartAfterHint("/r/b/c/3"))
	want = []walkEntry{dir("/r/b"), file("/r/b/d"), file("/r/e")}
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Walk(/r) after /r/b/c/3 (-want +got):\n%s", diff)
	}

	if got, err = walk("/r", nil, storagedriver.WithStartAfterHint("/r/z")); err != nil || len(got) != 0 {
		t.Errorf("Walk(/r) after its last entry = %v, %v; want nothing and no error", got, err)
	}
	if _, err = walk("/nothing", nil); !errors.As(err, new(storagedriver.PathNotFoundError)) {
		t.Errorf("Walk of a missing directory = %v, want PathNotFoundError", err)
	}
	wantErr := errors.New("stop")
	// base.Base wraps it in a storagedriver.Error, which does not unwrap.
	var driverErr storagedriver.Error
	if _, err = walk("/r", func(storagedriver.FileInfo) error { return wantErr }); !errors.As(err, &driverErr) || driverErr.Detail != wantErr {
		t.Errorf("Walk with a failing func = %v, want its error", err)
	}

	paths, err := d.List(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/r", "/s"}, paths); diff != "" {
		t.Errorf("List(/) (-want +got):\n%s", diff)
	}
	paths, err = d.List(ctx, "/r/b")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/r/b/d", "/r/b/c"}, paths); diff != "" {
		t.Errorf("List(/r/b) (-want +got):\n%s", diff)
	}
	fi, err := d.Stat(ctx, "/")
	if err != nil || !fi.IsDir() {
		t.Errorf("Stat(/) = %v, %v; want a directory", fi, err)
	}
}

func TestRedirectURLDisabled(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	d := newTestDriver(t, srv, Options{})
	u, err := d.RedirectURL(httptest.NewRequest(http.MethodGet, "/x", nil), "/x")
	if u != "" || err != nil {
		t.Fatalf("RedirectURL without Redirect = %q, %v; want \"\", nil", u, err)
	}
}
