package storage

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/storage/miniotest"
)

// TestOrphanTailSwept: a PATCH that resumed an upload on one replica while
// another replica cancelled it stores its tail after the cancel; the tail
// outlives the upload until DeleteUnnamedData removes it (with its
// multipart upload), while the tail of an upload that exists is kept and
// that upload still completes.
func TestOrphanTailSwept(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	bucket := srv.NewBucket(t)
	var drivers [2]*Driver
	var stores [2]distribution.BlobStore
	for i := range stores {
		d := newTestDriver(t, srv, Options{Bucket: bucket, Prefix: "p", Region: "us-east-1", PartSize: MinPartSize})
		drivers[i], stores[i] = d, repoBlobs(t, d)
	}
	request := func() context.Context { return requestContext(t.Context()) }

	up, err := stores[0].Create(request())
	if err != nil {
		t.Fatal(err)
	}
	_ = up.Close()
	patch, err := stores[1].Resume(request(), up.ID()) // a PATCH begins on replica 1
	if err != nil {
		t.Fatal(err)
	}
	ctx := request()
	del, err := stores[0].Resume(ctx, up.ID()) // the client's DELETE, on replica 0
	if err != nil {
		t.Fatal(err)
	}
	if err := del.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, patch, []byte(strings.Repeat("x", MinPartSize+10))) // a part sent
	_ = patch.Close()

	// An upload that exists, its tail stored.
	live, err := stores[0].Create(request())
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("live upload")
	mustWrite(t, live, content)
	_ = live.Close()

	left := leftovers(t, srv, bucket)
	if !slices.ContainsFunc(left, func(k string) bool { return strings.Contains(k, up.ID()) }) {
		t.Fatalf("no state left of the cancelled upload (the test no longer races): %v", left)
	}
	// Not old enough yet: nothing removed.
	if n, _, err := drivers[1].DeleteUnnamedData(t.Context(), time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("DeleteUnnamedData of an hour ago = %d, %v; want 0", n, err)
	}
	n, _, err := drivers[1].DeleteUnnamedData(t.Context(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("DeleteUnnamedData removed %d objects, want 1 (the orphan tail)", n)
	}
	for _, k := range leftovers(t, srv, bucket) {
		if !strings.Contains(k, live.ID()) {
			t.Errorf("left after the sweep: %s", k)
		}
	}
	if _, err := stores[1].Resume(request(), up.ID()); err != distribution.ErrBlobUploadUnknown {
		t.Errorf("Resume of the cancelled upload after the sweep: %v, want ErrBlobUploadUnknown", err)
	}
	ctx = request()
	live, err = stores[1].Resume(ctx, live.ID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := live.Commit(ctx, v1.Descriptor{Digest: digest.FromBytes(content)}); err != nil {
		t.Fatalf("commit of the live upload after the sweep: %v", err)
	}
	if left := leftovers(t, srv, bucket); len(left) > 0 {
		t.Errorf("writer state left: %v", left)
	}
}

// TestFreshStart: a PATCH skips storing its hash state only within a minute
// after its upload's start, never for a start in the future or unreadable.
func TestFreshStart(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		startedAt string
		want      bool
	}{
		{now.Format(time.RFC3339), true},
		{now.Add(-59 * time.Second).Format(time.RFC3339), true},
		{now.Add(-time.Minute).Format(time.RFC3339), false},
		{now.Add(-time.Hour).Format(time.RFC3339), false},
		{now.Add(time.Second).Format(time.RFC3339), false},
		{now.Add(30 * time.Second).Format(time.RFC3339), false},
		{"yesterday", false},
	} {
		if got := freshStart(tt.startedAt, now); got != tt.want {
			t.Errorf("freshStart(%q) = %v, want %v", tt.startedAt, got, tt.want)
		}
	}
}
