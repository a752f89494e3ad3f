package gc

import (
	"context"
	"path"
	"testing"

	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
)

// TestCountStored checks the counts of one listing: repositories with
// content, their tags and manifests (a sha512 alias not counted again),
// and blobs with their bytes.
func TestCountStored(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := inmemory.New()
	put := func(p string, n int) {
		t.Helper()
		if err := d.PutContent(ctx, p, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	m1, m2 := digest.FromString("m1"), digest.FromString("m2")
	put(blobData(m1), 300)
	put(blobData(m2), 200)
	put(blobData(digest.FromString("layer")), 1000)
	put(path.Join(revisionDir("team/app", m1), "link"), 71)
	put(path.Join(revisionDir("team/app", m2), "link"), 71)
	put(path.Join(revisionDir("team/app", digest.SHA512.FromString("m2")), "link"), 71)
	put(tagCurrent("team/app", "v1"), 71)
	put(tagCurrent("team/app", "v2"), 71)
	put(path.Join(revisionDir("other", m1), "link"), 71)
	put(path.Join(repoDir("uploading"), "_uploads", "id", "data"), 5) // no content yet
	got, err := CountStored(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	want := Stored{Repositories: 2, Tags: 2, Manifests: 3, Blobs: 3, Bytes: 1500}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("CountStored (-want +got):\n%s", diff)
	}
}
