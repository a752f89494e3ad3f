package admission

import (
	"context"
	"fmt"
	"testing"

	"github.com/opencontainers/go-digest"
)

// BenchmarkAllowBlob measures a blob read check in a gated repository of
// 1,000 manifests sharing a base layer, the release tagged: the first
// check builds the index (rebuild), later ones find the release remembered
// (cached).
func BenchmarkAllowBlob(b *testing.B) {
	repo := newMemRepo()
	base := digest.FromString("base layer")
	var release digest.Digest
	for i := range 1000 {
		release = repo.put(image(digest.FromString(fmt.Sprint("cfg", i)), base, ""), base)
	}
	repo.tags["v1"] = release
	ctx := context.Background()
	read := BlobRead{Repository: "team/app", Digest: base}
	b.Run("rebuild", func(b *testing.B) {
		g := gateOver(b, repo, release)
		for b.Loop() {
			g.owners.forget("team/app")
			if err := g.AllowBlob(ctx, read); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		g := gateOver(b, repo, release)
		for b.Loop() {
			if err := g.AllowBlob(ctx, read); err != nil {
				b.Fatal(err)
			}
		}
	})
}
