package replication

import (
	"net/http"
	"sync/atomic"
	"testing"
)

// TestCopyNewManifestTagsWithoutHead: a tag naming a manifest the copy
// just stored is PUT without asking the destination first (no tag can
// name a manifest it did not have), also when the tag moves there.
func TestCopyNewManifestTagsWithoutHead(t *testing.T) {
	t.Parallel()
	src := newUpstream(t, authNone, true)
	dst := newUpstream(t, authNone, true)
	var tagHeads, tagPuts atomic.Int64
	dst.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/v2/prod/app/manifests/v1" {
			switch r.Method {
			case http.MethodHead:
				tagHeads.Add(1)
			case http.MethodPut:
				tagPuts.Add(1)
			}
		}
		return false
	})
	c := NewCopier(newRemote(t, src, Options{Name: "a"}), newRemote(t, dst, Options{Name: "b"}))
	to := newRemote(t, dst, Options{Name: "b"})
	for i, want := range []int64{1, 2} {
		d := src.seed("prod/app", "v1", randomImage(t))
		if _, err := c.Copy(t.Context(), "prod/app", "prod/app", "v1"); err != nil {
			t.Fatalf("copy %d: %v", i+1, err)
		}
		if tagHeads.Load() != 0 || tagPuts.Load() != want {
			t.Errorf("copy %d: %d HEADs and %d PUTs of the tag, want 0 and %d", i+1, tagHeads.Load(), tagPuts.Load(), want)
		}
		if got, err := to.HeadManifest(t.Context(), "prod/app", "v1"); err != nil || got.Digest.String() != d.String() {
			t.Fatalf("copy %d: destination v1 is %v (%v), want %s", i+1, got.Digest, err, d)
		}
		tagHeads.Store(0) // the check above
	}
	// The same image again: the destination is asked, and nothing is PUT.
	if _, err := c.Copy(t.Context(), "prod/app", "prod/app", "v1"); err != nil {
		t.Fatal(err)
	}
	if tagPuts.Load() != 2 {
		t.Errorf("%d PUTs of the tag after copying the same image again, want 2", tagPuts.Load())
	}
}
