package replication

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	ggcrv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
)

// seedIndex pushes a random index of two images to repo:tag at up and
// returns its descriptor.
func seedIndex(t *testing.T, up *upstream, repo, tag string) ggcrv1.Descriptor {
	t.Helper()
	idx, err := random.Index(512, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref := up.ref(repo + ":" + tag)
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatalf("seed index: %v", err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := idx.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := idx.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	return ggcrv1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(raw))}
}

func TestCopyGraph(t *testing.T) {
	t.Parallel()
	src := newUpstream(t, authBearer, true)
	dst := newUpstream(t, authBearer, true)
	subj := seedIndex(t, src, "prod/app", "v1")
	sd := digest.Digest(subj.Digest.String())
	sbom := pushReferrer(t, src, "prod/app", subj)
	sig := randomImage(t)
	sigTag := "sha256-" + sd.Encoded() + ".sig"
	sigDigest := src.seed("prod/app", sigTag, sig)

	from := newRemote(t, src, Options{Name: "a"})
	to := newRemote(t, dst, Options{Name: "b"})
	c := NewCopier(from, to)
	res, err := c.Copy(t.Context(), "prod/app", "prod/app", "v1")
	if err != nil {
		t.Fatalf("Copy: %v", err)
	}
	if res.Digest != sd {
		t.Errorf("copied %s, want %s", res.Digest, sd)
	}
	// index, 2 children, sbom, sig by digest, sig tag, tag
	if res.Manifests != 7 {
		t.Errorf("stored %d manifests, want 7", res.Manifests)
	}
	head, err := to.HeadManifest(t.Context(), "prod/app", "v1")
	if err != nil || head.Digest != sd {
		t.Fatalf("destination tag: %v %v, want %s", head.Digest, err, sd)
	}
	refs, err := to.Referrers(t.Context(), "prod/app", sd)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sbom.Digest, refs[0].Digest); len(refs) != 1 || diff != "" {
		t.Errorf("destination referrers %v, want [%s]", refs, sbom.Digest)
	}
	sh, err := to.HeadManifest(t.Context(), "prod/app", sigTag)
	if err != nil || sh.Digest.String() != sigDigest.String() {
		t.Errorf("destination %s: %v %v, want %s", sigTag, sh.Digest, err, sigDigest)
	}

	// Again: nothing is stored twice.
	var puts atomic.Int64
	dst.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPut || r.Method == http.MethodPatch || r.Method == http.MethodPost {
			puts.Add(1)
		}
		return false
	})
	res, err = c.Copy(t.Context(), "prod/app", "prod/app", "v1")
	if err != nil {
		t.Fatalf("second Copy: %v", err)
	}
	if res.Manifests != 0 || res.Uploaded != 0 || puts.Load() != 0 {
		t.Errorf("second copy stored %d manifests and %d blobs in %d writes, want none", res.Manifests, res.Uploaded, puts.Load())
	}
}

func TestUploadBlobChunked(t *testing.T) {
	t.Parallel()
	src := newUpstream(t, authNone, true)
	dst := newUpstream(t, authBasic, true)
	dst.setCredentials("robot", "secret")
	src.seed("big/app", "v1", randomImage(t))
	user, pass := writeCredentials(t, "robot", "secret")
	to := newRemote(t, dst, Options{Name: "b", UsernameFile: user, PasswordFile: pass})
	to.chunkSize = 100
	var patches atomic.Int64
	dst.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPatch {
			patches.Add(1)
		}
		return false
	})
	res, err := NewCopier(newRemote(t, src, Options{Name: "a"}), to).Copy(t.Context(), "big/app", "big/app", "v1")
	if err != nil {
		t.Fatalf("Copy: %v", err)
	}
	// two 256-byte layers in 3 chunks each; the config fits one PUT or more
	if res.Uploaded != 3 || patches.Load() < 6 {
		t.Errorf("uploaded %d blobs in %d PATCHes, want 3 blobs in at least 6", res.Uploaded, patches.Load())
	}
	if _, err := to.HeadManifest(t.Context(), "big/app", "v1"); err != nil {
		t.Errorf("destination tag: %v", err)
	}
}

func TestCopyDenied(t *testing.T) {
	t.Parallel()
	src := newUpstream(t, authNone, true)
	dst := newUpstream(t, authNone, true)
	src.seed("prod/app", "v1", randomImage(t))
	dst.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/manifests/v1") {
			writeError(w, http.StatusForbidden, "DENIED", "no trusted signature for sha256:abc")
			return true
		}
		return false
	})
	_, err := NewCopier(newRemote(t, src, Options{Name: "a"}), newRemote(t, dst, Options{Name: "b"})).Copy(t.Context(), "prod/app", "prod/app", "v1")
	if err == nil {
		t.Fatal("Copy succeeded, want the destination's refusal")
	}
	if !Permanent(err) {
		t.Errorf("Permanent(%v) = false", err)
	}
	if got := Reason(err); got != "DENIED: no trusted signature for sha256:abc" {
		t.Errorf("Reason = %q", got)
	}

	// An unavailable destination is not a permanent failure.
	dst.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "maintenance")
		return true
	})
	_, err = NewCopier(newRemote(t, src, Options{Name: "a"}), newRemote(t, dst, Options{Name: "b"})).Copy(t.Context(), "prod/app", "prod/app", "v1")
	if err == nil || Permanent(err) {
		t.Errorf("Copy to an unavailable destination: %v, permanent %v; want a temporary failure", err, Permanent(err))
	}
}

func TestTagsAndDeleteTag(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authBearer, true)
	up.seed("prod/app", "v1", randomImage(t))
	up.seed("prod/app", "v2", randomImage(t))
	r := newRemote(t, up, Options{})
	tags, err := r.Tags(t.Context(), "prod/app")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"v1", "v2"}, tags); diff != "" {
		t.Errorf("tags (-want +got):\n%s", diff)
	}
	if err := r.DeleteTag(t.Context(), "prod/app", "v1"); err != nil {
		t.Fatalf("DeleteTag: %v", err)
	}
	if _, err := r.HeadManifest(t.Context(), "prod/app", "v1"); err == nil {
		t.Error("v1 still there after DeleteTag")
	}
	if tags, err := r.Tags(t.Context(), "none/such"); err != nil || len(tags) != 0 {
		t.Errorf("tags of a missing repository: %v %v, want none", tags, err)
	}
}

// TestCopySkipReferrer: a referrer SkipReferrer refuses is not copied, the
// others are, and the tag lands.
func TestCopySkipReferrer(t *testing.T) {
	t.Parallel()
	src := newUpstream(t, authNone, true)
	dst := newUpstream(t, authNone, true)
	subj := subjectOf(t, src, "prod/app")
	sbom := pushReferrer(t, src, "prod/app", subj)
	sd := digest.Digest(subj.Digest.String())
	sigTag := "sha256-" + sd.Encoded() + ".sig"
	src.seed("prod/app", sigTag, randomImage(t))

	skipped := 0
	c := NewCopier(newRemote(t, src, Options{Name: "a"}), newRemote(t, dst, Options{Name: "b"}), CopierOptions{
		SkipReferrer: func(body []byte) bool {
			if strings.Contains(string(body), "application/vnd.example.sbom") {
				skipped++
				return true
			}
			return false
		},
	})
	if _, err := c.Copy(t.Context(), "prod/app", "prod/app", "subject"); err != nil {
		t.Fatalf("Copy: %v", err)
	}
	to := newRemote(t, dst, Options{Name: "b"})
	if _, err := to.HeadManifest(t.Context(), "prod/app", string(sbom.Digest)); err == nil {
		t.Errorf("the skipped referrer %s is at the destination", sbom.Digest)
	}
	if _, err := to.HeadManifest(t.Context(), "prod/app", sigTag); err != nil {
		t.Errorf("the cosign signature tag is missing: %v", err)
	}
	if h, err := to.HeadManifest(t.Context(), "prod/app", "subject"); err != nil || h.Digest != sd {
		t.Errorf("destination tag: %v %v, want %s", h.Digest, err, sd)
	}
	if skipped != 1 {
		t.Errorf("SkipReferrer refused %d manifests, want 1", skipped)
	}
}
