package gc

import (
	"context"
	"fmt"
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

// benchStorage fills an in-memory driver with n repositories of one tag,
// one manifest and one layer each.
func benchStorage(b *testing.B, n int) *inmemory.Driver {
	b.Helper()
	ctx := context.Background()
	d := inmemory.New()
	for i := range n {
		repo := fmt.Sprintf("team/app%d", i)
		m, l := digest.FromString("m"+repo), digest.FromString("l"+repo)
		link := []byte(m.String())
		for p, content := range map[string][]byte{
			blobData(m): make([]byte, 400), blobData(l): make([]byte, 1000),
			path.Join(revisionDir(repo, m), "link"):       link,
			path.Join(layerDir(repo, l), "link"):          []byte(l.String()),
			tagCurrent(repo, "v1"):                        link,
			path.Join(tagIndexDir(repo, "v1", m), "link"): link,
		} {
			if err := d.PutContent(ctx, p, content); err != nil {
				b.Fatal(err)
			}
		}
	}
	return d
}

// BenchmarkCountStored counts what the storage holds, as the stored
// gauges do every 15 minutes; BenchmarkCollectorListing is the peer: the
// listing a collection's mark phase makes of the same storage (which also
// reads each tag), the other way to count. Compare time and allocations.
func BenchmarkCountStored(b *testing.B) {
	d := benchStorage(b, 2000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := CountStored(context.Background(), d); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCollectorListing(b *testing.B) {
	d := benchStorage(b, 2000)
	c, err := New(d, Options{Holder: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.list(context.Background(), false); err != nil {
			b.Fatal(err)
		}
	}
}
