package filesystem

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// TestHashStatesInMemory: an upload's hash states are kept in memory, not
// in files: the latest is what a listing of its directory and a read give;
// the state after 0 bytes is not kept; deleting the upload, or a directory
// above it, drops it.
func TestHashStatesInMemory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	states := upload + "/hashstates/sha256"
	if err := d.PutContent(ctx, upload+"/startedat", []byte("now")); err != nil {
		t.Fatal(err)
	}
	if err := d.PutContent(ctx, states+"/0", []byte("zero")); err != nil {
		t.Fatal(err)
	}
	var nf storagedriver.PathNotFoundError
	if got, err := d.List(ctx, states); !errors.As(err, &nf) {
		t.Errorf("hash states after the state at 0: %v, %v; want none", got, err)
	}
	for _, s := range []string{"4096", "8192"} {
		if err := d.PutContent(ctx, states+"/"+s, []byte("state "+s)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(d.root, states)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("hash states directory on disk: %v", err)
	}
	if got, err := d.List(ctx, states); err != nil || len(got) != 1 || got[0] != states+"/8192" {
		t.Errorf("hash states = %v, %v; want the one at 8192", got, err)
	}
	if got, err := d.GetContent(ctx, states+"/8192"); err != nil || string(got) != "state 8192" {
		t.Errorf("state at 8192 = %q, %v", got, err)
	}
	if _, err := d.GetContent(ctx, states+"/4096"); !errors.As(err, &nf) {
		t.Errorf("state at 4096, replaced: %v, want PathNotFoundError", err)
	}
	if got, err := d.List(ctx, upload+"/hashstates/sha512"); !errors.As(err, &nf) {
		t.Errorf("sha512 hash states = %v, %v; want none", got, err)
	}
	if err := d.Delete(ctx, upload); err != nil {
		t.Fatal(err)
	}
	if _, err := d.GetContent(ctx, states+"/8192"); !errors.As(err, &nf) {
		t.Errorf("state after the upload's deletion: %v, want PathNotFoundError", err)
	}
	if err := d.PutContent(ctx, upload+"/startedat", []byte("now")); err != nil {
		t.Fatal(err)
	}
	if err := d.PutContent(ctx, states+"/10", []byte("ten")); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, "/docker/registry/v2/repositories/team"); err != nil {
		t.Fatal(err)
	}
	if got, err := d.List(ctx, states); !errors.As(err, &nf) {
		t.Errorf("hash states after the repository's deletion: %v, %v; want none", got, err)
	}
}

// TestUploadResumedWithoutHashState: an upload goes on across its
// requests with its hash state in memory, and across a restart that lost
// it; either way the commit checks the digest of every byte.
func TestUploadResumedWithoutHashState(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	root := t.TempDir()
	name, err := reference.WithName("team/app")
	if err != nil {
		t.Fatal(err)
	}
	repoOf := func(d *Driver) distribution.Repository {
		t.Helper()
		ns, err := storage.NewRegistry(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		repo, err := ns.Repository(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return repo
	}
	for _, restart := range []bool{false, true} {
		first, second := bytes.Repeat([]byte("a"), 5000), bytes.Repeat([]byte("b"), 3000)
		if restart {
			first[0] = 'c'
		}
		whole := append(append([]byte(nil), first...), second...)
		for _, want := range []digest.Digest{digest.FromString("not this"), digest.FromBytes(whole)} {
			d, err := New(root)
			if err != nil {
				t.Fatal(err)
			}
			w, err := repoOf(d).Blobs(ctx).Create(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(first); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if restart {
				if d, err = New(root); err != nil {
					t.Fatal(err)
				}
			}
			if w, err = repoOf(d).Blobs(ctx).Resume(ctx, w.ID()); err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(second); err != nil {
				t.Fatal(err)
			}
			desc, err := w.Commit(ctx, distribution.Descriptor{Digest: want})
			if want != digest.FromBytes(whole) {
				var invalid distribution.ErrBlobInvalidDigest
				if !errors.As(err, &invalid) {
					t.Errorf("restart %v: commit as %s: %v, want ErrBlobInvalidDigest", restart, want, err)
				}
				_ = w.Cancel(ctx)
				continue
			}
			if err != nil || desc.Digest != want || desc.Size != int64(len(whole)) {
				t.Fatalf("restart %v: commit: %v, %v", restart, desc, err)
			}
			got, err := repoOf(d).Blobs(ctx).Get(ctx, want)
			if err != nil || !bytes.Equal(got, whole) {
				t.Errorf("restart %v: blob = %d bytes, %v", restart, len(got), err)
			}
		}
	}
}

// TestDeleteUpload: an upload's directory is deleted with whatever it
// holds, and a missing one is PathNotFoundError.
func TestDeleteUpload(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, files := range [][]string{
		{"startedat"},
		{"startedat", "data"},
		{"startedat", "data", "hashstates/sha256/4096", "other"},
	} {
		for _, f := range files {
			p := filepath.Join(d.root, upload, f)
			if err := os.MkdirAll(filepath.Dir(p), 0o777); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("x"), 0o666); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.Delete(ctx, upload); err != nil {
			t.Fatalf("delete an upload holding %v: %v", files, err)
		}
		if _, err := os.Stat(filepath.Join(d.root, upload)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("upload holding %v still there after Delete: %v", files, err)
		}
	}
	var nf storagedriver.PathNotFoundError
	if err := d.Delete(ctx, upload); !errors.As(err, &nf) {
		t.Errorf("Delete of a missing upload: %v, want PathNotFoundError", err)
	}
}
