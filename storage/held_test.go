package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/minio/minio-go/v7"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/storage/miniotest"
)

// stageUpload does a client's POST and PATCH of content, and resumes the
// upload for its PUT: the pending tail holds the content.
func stageUpload(ctx context.Context, t *testing.T, blobs distribution.BlobStore, content []byte) distribution.BlobWriter {
	t.Helper()
	up, err := blobs.Create(ctx)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	_ = up.Close()
	if up, err = blobs.Resume(ctx, up.ID()); err != nil {
		t.Fatalf("PATCH: %v", err)
	}
	if _, err := io.Copy(up, bytes.NewReader(content)); err != nil {
		t.Fatalf("PATCH: %v", err)
	}
	_ = up.Close()
	if up, err = blobs.Resume(ctx, up.ID()); err != nil {
		t.Fatalf("PUT: %v", err)
	}
	return up
}

// objectAt returns the content of the object at key, or nil when there is
// none.
func objectAt(t *testing.T, srv *miniotest.Server, bucket, key string) []byte {
	t.Helper()
	obj, err := srv.Client(t).GetObject(t.Context(), bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHeldCommitSettled: when the rest of a commit fails after the driver
// held the upload's data in memory, distribution cancels the committed
// writer, and the bucket holds what a stored commit would have left: the
// upload's data at its path, no pending tail, and an upload that resumes
// empty.
func TestHeldCommitSettled(t *testing.T) {
	t.Parallel()
	content := []byte("a small layer")
	tests := []struct {
		name   string
		digest digest.Digest
		refuse func(r *http.Request) bool
		moved  bool // the blob was stored before the failure
	}{
		{name: "digest mismatch", digest: digest.FromString("something else")},
		{
			name:   "blob not stored",
			digest: digest.FromBytes(content),
			refuse: func(r *http.Request) bool {
				return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/")
			},
		},
		{
			name:   "link not stored",
			digest: digest.FromBytes(content),
			refuse: func(r *http.Request) bool {
				return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/_layers/")
			},
			moved: true,
		},
		{
			name:   "upload directory not deleted",
			digest: digest.FromBytes(content),
			refuse: func(r *http.Request) bool {
				return r.Method == http.MethodPost && r.URL.Query().Has("delete")
			},
			moved: true,
		},
	}
	srv := miniotest.Start(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			blobs, proxy, bucket := uploadRegistry(t, srv)
			up := stageUpload(ctx, t, blobs, content)
			if tt.refuse != nil {
				proxy.fail.Store(&tt.refuse)
			}
			if _, err := up.Commit(ctx, v1.Descriptor{Digest: tt.digest}); err == nil {
				t.Fatal("Commit succeeded")
			}
			proxy.fail.Store(nil)
			_ = up.Cancel(ctx) // as distribution's handler does; the writer is committed
			key := "p/docker/registry/v2/repositories/r/_uploads/" + up.ID() + "/data"
			want := content
			if tt.moved {
				want = nil // moved to the blob's path
			}
			if got := objectAt(t, srv, bucket, key); !bytes.Equal(got, want) {
				t.Errorf("upload data after the failed commit = %q, want %q", got, want)
			}
			if left := leftovers(t, srv, bucket); len(left) > 0 {
				t.Errorf("writer state left: %v", left)
			}
			again, err := blobs.Resume(ctx, up.ID())
			if err != nil {
				t.Fatalf("resume after the failed commit: %v", err)
			}
			if again.Size() != 0 {
				t.Errorf("upload resumed at %d after the failed commit, want 0", again.Size())
			}
			blob := "p/docker/registry/v2/blobs/sha256/" + tt.digest.Encoded()[:2] + "/" + tt.digest.Encoded() + "/data"
			if got := objectAt(t, srv, bucket, blob); tt.moved != (got != nil) || tt.moved && !bytes.Equal(got, content) {
				t.Errorf("blob after the failed commit = %q, want it stored: %v", got, tt.moved)
			}
		})
	}
}

// TestHeldCommitBlobExists: an upload of a blob that is already stored
// puts nothing (distribution moves nothing) and leaves nothing: neither
// the upload's data nor its tail.
func TestHeldCommitBlobExists(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	blobs, proxy, bucket := uploadRegistry(t, srv)
	ctx := t.Context()
	content := []byte("a layer pushed twice")
	pushBlob(ctx, t, blobs, content, func() {})
	proxy.take("", "")
	id := pushBlob(ctx, t, blobs, content, func() {})
	got := proxy.take("p", id)
	for _, r := range got {
		if strings.HasPrefix(r, "PUT blobs/") || strings.HasPrefix(r, "COPY ") || r == "PUT repositories/r/_uploads/ID/data" {
			t.Errorf("second push of a stored blob sent %q; requests:\n%s", r, strings.Join(got, "\n"))
		}
	}
	for obj := range srv.Client(t).ListObjectsIter(ctx, bucket, minio.ListObjectsOptions{Prefix: "p/docker/registry/v2/repositories/r/_uploads/", Recursive: true}) {
		t.Errorf("left in the uploads: %s %v", obj.Key, obj.Err)
	}
	if left := leftovers(t, srv, bucket); len(left) > 0 {
		t.Errorf("writer state left: %v", left)
	}
}

// TestHeldCommitReads: between a held commit and its move, the upload's data
// reads as the committed content; a new writer on the path first stores it
// as a commit would have.
func TestHeldCommitReads(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	bucket := srv.NewBucket(t)
	d := newTestDriver(t, srv, Options{Bucket: bucket})
	ctx := t.Context()
	path := "/docker/registry/v2/repositories/r/_uploads/u1/data"
	content := []byte("held in memory")
	w, err := d.Writer(ctx, path, false)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, content)
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := objectAt(t, srv, bucket, strings.TrimPrefix(path, "/")); got != nil {
		t.Fatalf("a small commit stored %q before its move", got)
	}
	fi, err := d.Stat(ctx, path)
	if err != nil || fi.Size() != int64(len(content)) || fi.IsDir() {
		t.Fatalf("Stat = %v, %v; want a file of %d bytes", fi, err, len(content))
	}
	if got, err := d.GetContent(ctx, path); err != nil || !bytes.Equal(got, content) {
		t.Errorf("GetContent = %q, %v; want %q", got, err, content)
	}
	for _, offset := range []int64{0, 5, int64(len(content)), 100} {
		r, err := d.Reader(ctx, path, offset)
		if err != nil {
			t.Fatalf("Reader at %d: %v", offset, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if want := content[min(offset, int64(len(content))):]; err != nil || !bytes.Equal(got, want) {
			t.Errorf("Reader at %d = %q, %v; want %q", offset, got, err, want)
		}
	}
	w2, err := d.Writer(ctx, path, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := objectAt(t, srv, bucket, strings.TrimPrefix(path, "/")); !bytes.Equal(got, content) {
		t.Errorf("after a new writer, the path holds %q, want the commit's %q", got, content)
	}
	if err := w2.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	// Move of a held commit stores the blob from memory.
	w, err = d.Writer(ctx, path, false)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, content)
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	blob := "/docker/registry/v2/blobs/sha256/ab/abcd/data"
	if err := d.Move(ctx, path, blob); err != nil {
		t.Fatal(err)
	}
	if got, err := d.GetContent(ctx, blob); err != nil || !bytes.Equal(got, content) {
		t.Errorf("blob after the move = %q, %v; want %q", got, err, content)
	}
	var notFound storagedriver.PathNotFoundError
	if _, err := d.Stat(ctx, path); !errors.As(err, &notFound) {
		t.Errorf("Stat of the moved upload data = %v, want PathNotFoundError", err)
	}
}

// TestHeldCommitsBounded: held commits count the bytes they hold against
// the budget, and their number is bounded too: past maxHeld (moved ones
// included, which hold no bytes), entries older than heldTTL make room,
// and without such entries a commit is refused (stored as before).
func TestHeldCommitsBounded(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := newHeldCommits(func() time.Time { return now })
	entry := func(i int) (string, *held) {
		p := fmt.Sprintf("/docker/registry/v2/repositories/r/_uploads/%d/data", i)
		return p, &held{w: &writer{path: p}, mod: now}
	}
	for i := range maxHeld {
		p, h := entry(i)
		if !c.hold(p, h) {
			t.Fatalf("commit %d refused under the bounds", i)
		}
		c.markMoved(p, h)
	}
	p, h := entry(maxHeld)
	if c.hold(p, h) {
		t.Fatalf("commit %d held past maxHeld with no old entry", maxHeld)
	}
	now = now.Add(heldTTL + time.Second)
	h.data, h.mod = []byte("x"), now
	if !c.hold(p, h) {
		t.Fatal("commit refused though every entry was older than heldTTL")
	}
	if len(c.m) != 1 || c.bytes != 1 {
		t.Errorf("after the sweep: %d entries, %d bytes; want 1, 1", len(c.m), c.bytes)
	}
}
