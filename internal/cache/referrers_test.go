package cache_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	ggcrv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/internal/cache"
	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/scan/artifact"
)

// signedImage is an image upstream with an OCI referrer, a cosign-style
// signature tag and two referrers of the scanner's reserved types.
type signedImage struct {
	image, sbom, sig, reportByConfig, reportByArtifactType digest.Digest
	sigTag                                                 string
}

// artifactOf returns an OCI artifact whose config media type is
// configType and whose subject is subject.
func artifactOf(t *testing.T, configType string, subject ggcrv1.Image) ggcrv1.Image {
	t.Helper()
	desc, err := partial.Descriptor(subject)
	if err != nil {
		t.Fatal(err)
	}
	base := mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.MediaType(configType)), types.OCIManifestSchema1)
	return mutate.Subject(base, *desc).(ggcrv1.Image)
}

// pushSigned pushes img to repo:tag upstream with its referrers.
func pushSigned(t *testing.T, u *upstream, repo, tag string) signedImage {
	t.Helper()
	img := randomImage(t, 1024, 1)
	var s signedImage
	s.image = u.push(repo, tag, img)
	sbom := artifactOf(t, "application/vnd.example.sbom", img)
	sd, _ := sbom.Digest()
	s.sbom = u.push(repo, sd.String(), sbom)
	report := artifactOf(t, artifact.ArtifactTypeReport, img)
	rd, _ := report.Digest()
	s.reportByConfig = u.push(repo, rd.String(), report)
	// A report by artifactType alone: the referrers list names it by its
	// config type, so only its content shows what it is.
	desc, _ := partial.Descriptor(img)
	body, err := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": ocispec.MediaTypeImageManifest, "artifactType": artifact.ArtifactTypeReport,
		"config":  ocispec.DescriptorEmptyJSON,
		"layers":  []ocispec.Descriptor{ocispec.DescriptorEmptyJSON},
		"subject": ocispec.Descriptor{MediaType: string(desc.MediaType), Digest: digest.Digest(desc.Digest.String()), Size: desc.Size},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.reportByArtifactType = digest.FromBytes(body)
	req := httptest.NewRequest(http.MethodPut, "/v2/"+repo+"/manifests/"+s.reportByArtifactType.String(), bytes.NewReader(body))
	req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
	rec := httptest.NewRecorder()
	u.reg.ServeHTTP(rec, req)
	if rec.Code != http.StatusCreated {
		t.Fatalf("put report upstream: %d %s", rec.Code, rec.Body)
	}
	s.sigTag = strings.Replace(s.image.String(), ":", "-", 1) + ".sig"
	s.sig = u.push(repo, s.sigTag, randomImage(t, 128, 1))
	return s
}

// TestReferrersBeforeTag: the first pull of an image copies its referrers
// (the referrers API and cosign's signature tag), with their blobs, before
// the image's tag is set; referrers of the scanner's reserved types are
// not copied.
func TestReferrersBeforeTag(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	const name = prefix + "/library/signed"
	s := pushSigned(t, e.up, "library/signed", "v1")

	var mu sync.Mutex
	var atTag []string // what was missing when v1 was tagged
	tagged := false
	e.repos.hook.set(func(repo, tag string) {
		if repo != name || tag != "v1" {
			return
		}
		var missing []string
		if e.manifest(name, s.sbom) == nil {
			missing = append(missing, "the referrer")
		}
		if e.tag(name, s.sigTag) != s.sig {
			missing = append(missing, "the signature tag")
		}
		mu.Lock()
		defer mu.Unlock()
		tagged, atTag = true, missing
	})

	if got := e.pull(name, "v1"); got != cache.Miss {
		t.Fatalf("pull: %s, want miss", got)
	}
	mu.Lock()
	if !tagged || len(atTag) > 0 {
		t.Errorf("when v1 was tagged (%v), missing: %v", tagged, atTag)
	}
	mu.Unlock()
	if e.manifest(name, s.sbom) == nil {
		t.Errorf("referrer %s not copied", s.sbom)
	}
	if got := e.tag(name, s.sigTag); got != s.sig {
		t.Errorf("tag %s → %q, want the signature %s", s.sigTag, got, s.sig)
	}
	for what, d := range map[string]digest.Digest{"report by config type": s.reportByConfig, "report by artifactType": s.reportByArtifactType} {
		if e.manifest(name, d) != nil {
			t.Errorf("%s %s was copied from the remote", what, d)
		}
	}
	// Signatures are read whole by the verifier: their blobs come with them.
	if msg := missingBlobs(t.Context(), e.repos, name, s.sig); msg != "" {
		t.Error(msg)
	}
	e.waitComplete(name, s.image)
	refEv := e.events.wait(t, func(ev outbox.Event) bool { return ev.Digest == s.sbom })
	if refEv.Kind != outbox.KindPush || refEv.Subject != s.image {
		t.Errorf("referrer event %+v, want a push with subject %s", refEv, s.image)
	}
	sigEv := e.events.wait(t, func(ev outbox.Event) bool { return ev.Digest == s.sig && ev.Tag == s.sigTag })
	if sigEv.Kind != outbox.KindTag {
		t.Errorf("signature tag event %+v, want a tag event", sigEv)
	}
}
