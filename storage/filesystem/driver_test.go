package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/testsuites"
)

// TestDriverSuite runs distribution's driver conformance suite.
func TestDriverSuite(t *testing.T) {
	root := t.TempDir()
	testsuites.Driver(t, func() (storagedriver.StorageDriver, error) { return New(root) }, true)
}

const upload = "/docker/registry/v2/repositories/team/app/_uploads/0b6e3c1e-5a0e-4f7a-9a43-2c1f6f1a2b3c"

// TestUploadData: an upload's data is appended to over several writers and
// holds every byte once committed; a cancelled writer leaves nothing.
func TestUploadData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	path := upload + "/data"
	chunks := []string{"first chunk, ", "second chunk, ", "last chunk"}
	for i, c := range chunks {
		w, err := d.Writer(ctx, path, i > 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, c); err != nil {
			t.Fatal(err)
		}
		if i == len(chunks)-1 {
			if err := w.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(w, "more"); err == nil {
				t.Error("write after Commit succeeded")
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err == nil {
			t.Error("second Close succeeded")
		}
	}
	got, err := d.GetContent(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if want := chunks[0] + chunks[1] + chunks[2]; string(got) != want {
		t.Errorf("data = %q, want %q", got, want)
	}
	w, err := d.Writer(ctx, path, true)
	if err != nil {
		t.Fatal(err)
	}
	if w.Size() != int64(len(got)) {
		t.Errorf("appending writer's Size = %d, want %d", w.Size(), len(got))
	}
	if err := w.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat(ctx, path); !errors.As(err, new(storagedriver.PathNotFoundError)) {
		t.Errorf("Stat after Cancel: %v, want PathNotFoundError", err)
	}
}

// TestUploadState: upload state is stored and replaced whole, and leaves no
// temporary file behind; hash states too once more uploads than
// maxHashStates keep theirs in memory.
func TestUploadState(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	root := t.TempDir()
	d, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxHashStates {
		d.states.m[fmt.Sprintf("/docker/registry/v2/repositories/other/_uploads/%d", i)] = hashState{}
	}
	for _, p := range []string{upload + "/startedat", upload + "/hashstates/sha256/4096"} {
		for _, v := range []string{"one", "two"} {
			if err := d.PutContent(ctx, p, []byte(v)); err != nil {
				t.Fatal(err)
			}
			got, err := d.GetContent(ctx, p)
			if err != nil || string(got) != v {
				t.Errorf("GetContent(%s) = %q, %v; want %q", p, got, err, v)
			}
		}
		entries, err := os.ReadDir(filepath.Join(root, filepath.Dir(p)))
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 {
			t.Errorf("%s: directory holds %d entries, want 1", filepath.Dir(p), len(entries))
		}
	}
	if err := d.PutContent(ctx, "docker/x/_uploads/u/startedat", nil); err == nil {
		t.Error("PutContent of an invalid path succeeded")
	}
}

// TestMove: a committed upload moves to a blob path whose directories do
// not exist yet; the source is gone after, and a missing source is
// PathNotFoundError.
func TestMove(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w, err := d.Writer(ctx, upload+"/data", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, "blob"); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(w.Commit(ctx), w.Close()); err != nil {
		t.Fatal(err)
	}
	blob := "/docker/registry/v2/blobs/sha256/ab/abcdef/data"
	if err := d.Move(ctx, upload+"/data", blob); err != nil {
		t.Fatal(err)
	}
	if got, err := d.GetContent(ctx, blob); err != nil || string(got) != "blob" {
		t.Errorf("blob = %q, %v; want %q", got, err, "blob")
	}
	err = d.Move(ctx, upload+"/data", blob)
	if !errors.As(err, new(storagedriver.PathNotFoundError)) {
		t.Errorf("Move of a moved source: %v, want PathNotFoundError", err)
	}
}
