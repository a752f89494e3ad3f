package app

import (
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestStoredManifestsBoundedInBytes: the manifests a listing keeps take at
// most maxCachedManifestBytes, however large each is.
func TestStoredManifestsBoundedInBytes(t *testing.T) {
	t.Parallel()
	s := newStoredContent(indexedRepos{}, nil)
	big := make([]byte, 4<<20) // the largest manifest distribution accepts
	for i := range 64 {
		s.remember(digest.FromBytes([]byte{byte(i)}), manifestInfo{payload: big})
	}
	var held int
	for _, m := range s.manifests {
		held += len(m.payload)
	}
	if held > maxCachedManifestBytes || held != s.cached {
		t.Errorf("cache holds %d bytes (counted %d), want at most %d", held, s.cached, maxCachedManifestBytes)
	}
	if len(s.manifests) == 0 {
		t.Error("nothing cached")
	}
}
