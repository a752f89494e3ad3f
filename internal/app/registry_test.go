package app_test

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/portcullis/portcullis/internal/testenv"
)

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func TestPushPullImageAndIndex(t *testing.T) {
	t.Parallel()
	reg := testenv.Start(t, nil)
	img, err := random.Image(1024, 3)
	if err != nil {
		t.Fatal(err)
	}
	ref := mustRef(t, reg.Host+"/team/app:v1")
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push: %v", err)
	}
	got, err := remote.Image(ref)
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	wantDigest, _ := img.Digest()
	gotDigest, _ := got.Digest()
	if wantDigest != gotDigest {
		t.Errorf("digest: pushed %s, pulled %s", wantDigest, gotDigest)
	}
	layers, _ := got.Layers()
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Fatalf("read layer: %v", err) // ggcr verifies the digest while reading
		}
		rc.Close()
	}

	idx, err := random.Index(512, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	iref := mustRef(t, reg.Host+"/team/app:multi")
	if err := remote.WriteIndex(iref, idx); err != nil {
		t.Fatalf("push index: %v", err)
	}
	gotIdx, err := remote.Index(iref)
	if err != nil {
		t.Fatal(err)
	}
	wi, _ := idx.Digest()
	gi, _ := gotIdx.Digest()
	if wi != gi {
		t.Errorf("index digest: pushed %s, pulled %s", wi, gi)
	}
	tags, err := remote.List(ref.Context())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(tags, ",") != "multi,v1" {
		t.Errorf("tags = %v", tags)
	}
}

// TestReferrers pushes an image, an artifact that refers to it, and checks the
// referrers API, its artifactType filter, the OCI-Subject header, and that the
// index is rebuilt when its files are lost.
func TestReferrers(t *testing.T) {
	t.Parallel()
	reg := testenv.Start(t, nil)
	img, _ := random.Image(256, 1)
	ref := mustRef(t, reg.Host+"/team/signed:v1")
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	imgDigest, _ := img.Digest()
	imgDesc, _ := partialDescriptor(img)

	base := mutate.MediaType(mutate.ConfigMediaType(empty.Image, "application/vnd.example.signature"), types.OCIManifestSchema1)
	sig := mutate.Subject(base, imgDesc).(v1.Image)
	sigDigest, _ := sig.Digest()
	sigRef := mustRef(t, reg.Host+"/team/signed@"+sigDigest.String())
	if err := remote.Write(sigRef, sig); err != nil {
		t.Fatalf("push referrer: %v", err)
	}

	// The OCI-Subject header on a manifest PUT.
	raw, _ := sig.RawManifest()
	req, _ := http.NewRequest(http.MethodPut, reg.URL+"/v2/team/signed/manifests/"+sigDigest.String(), bytes.NewReader(raw))
	req.Header.Set("Content-Type", string(types.OCIManifestSchema1))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("OCI-Subject") != imgDigest.String() {
		t.Errorf("PUT: status %d, OCI-Subject %q; want 201 and %s", resp.StatusCode, resp.Header.Get("OCI-Subject"), imgDigest)
	}

	list := func(query string) (v1.IndexManifest, http.Header) {
		t.Helper()
		resp, err := http.Get(reg.URL + "/v2/team/signed/referrers/" + imgDigest.String() + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != string(types.OCIImageIndex) {
			t.Fatalf("referrers: status %d content-type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		var im v1.IndexManifest
		if err := json.NewDecoder(resp.Body).Decode(&im); err != nil {
			t.Fatal(err)
		}
		return im, resp.Header
	}
	im, _ := list("")
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != sigDigest || im.Manifests[0].ArtifactType != "application/vnd.example.signature" {
		t.Fatalf("referrers = %+v, want the signature %s", im.Manifests, sigDigest)
	}
	im, h := list("?artifactType=application/vnd.example.sbom")
	if len(im.Manifests) != 0 || h.Get("OCI-Filters-Applied") != "artifactType" {
		t.Errorf("filtered referrers = %+v, header %q", im.Manifests, h.Get("OCI-Filters-Applied"))
	}

	// The index is rebuilt from the manifests when its files are lost
	// (an old data directory, a restore of blobs and manifests only).
	if err := os.RemoveAll(filepath.Join(reg.Config.FilesystemRoot(), "docker/registry/v2/repositories/team/signed/_referrers")); err != nil {
		t.Fatal(err)
	}
	if im, _ := list(""); len(im.Manifests) != 1 || im.Manifests[0].Digest != sigDigest {
		t.Fatalf("after losing the index, referrers = %+v", im.Manifests)
	}

	// Deleting the referrer removes it from the index.
	del, _ := http.NewRequest(http.MethodDelete, reg.URL+"/v2/team/signed/manifests/"+sigDigest.String(), nil)
	resp, err = http.DefaultClient.Do(del)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("DELETE referrer: %d", resp.StatusCode)
	}
	if im, _ := list(""); len(im.Manifests) != 0 {
		t.Errorf("after delete, referrers = %+v", im.Manifests)
	}
}

func partialDescriptor(img v1.Image) (v1.Descriptor, error) {
	d, err := img.Digest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	sz, err := img.Size()
	if err != nil {
		return v1.Descriptor{}, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{MediaType: mt, Digest: d, Size: sz}, nil
}

// TestSHA512 pushes a blob and a manifest by sha512 and reads them back by
// the same digest.
func TestSHA512(t *testing.T) {
	t.Parallel()
	reg := testenv.Start(t, nil)
	blob := []byte("portcullis sha512 layer")
	blobDigest := sha512Digest(blob)
	loc := startUpload(t, reg.URL, "team/five")
	put(t, loc+"&digest="+blobDigest, "application/octet-stream", blob, http.StatusCreated, blobDigest)
	cfg := []byte("{}")
	cfgDigest := sha512Digest(cfg)
	loc = startUpload(t, reg.URL, "team/five")
	put(t, loc+"&digest="+cfgDigest, "application/octet-stream", cfg, http.StatusCreated, cfgDigest)

	manifest := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}]}`,
		cfgDigest, len(cfg), blobDigest, len(blob)))
	md := sha512Digest(manifest)
	put(t, reg.URL+"/v2/team/five/manifests/"+md, "application/vnd.oci.image.manifest.v1+json", manifest, http.StatusCreated, md)

	for _, path := range []string{"/blobs/" + blobDigest, "/manifests/" + md} {
		req, _ := http.NewRequest(http.MethodGet, reg.URL+"/v2/team/five"+path, nil)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
		}
		if got := resp.Header.Get("Docker-Content-Digest"); !strings.HasSuffix(path, got) {
			t.Errorf("GET %s: Docker-Content-Digest %s", path, got)
		}
		if sha512Digest(body) != path[strings.LastIndex(path, "/")+1:] {
			t.Errorf("GET %s: body does not match its digest", path)
		}
	}

	// A body that does not match the sha512 digest is refused.
	bad := sha512Digest([]byte("other"))
	put(t, reg.URL+"/v2/team/five/manifests/"+bad, "application/vnd.oci.image.manifest.v1+json", manifest, http.StatusBadRequest, "")

	// Mount by sha512 into another repository.
	req, _ := http.NewRequest(http.MethodPost, reg.URL+"/v2/team/six/blobs/uploads/?mount="+blobDigest+"&from=team/five", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != blobDigest {
		t.Fatalf("mount: %d %q", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
	}
	resp, err = http.Get(reg.URL + "/v2/team/six/blobs/" + blobDigest)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, blob) {
		t.Errorf("GET mounted blob: %d", resp.StatusCode)
	}
}

func sha512Digest(b []byte) string {
	s := sha512.Sum512(b)
	return "sha512:" + hex.EncodeToString(s[:])
}

func startUpload(t *testing.T, base, repo string) string {
	t.Helper()
	resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %d", resp.StatusCode)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = base + loc
	}
	if !strings.Contains(loc, "?") {
		loc += "?"
	}
	return loc
}

func put(t *testing.T, url, contentType string, body []byte, wantStatus int, wantDigest string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != wantStatus {
		t.Fatalf("PUT %s: status %d, want %d: %s", url, resp.StatusCode, wantStatus, b)
	}
	if wantDigest != "" && resp.Header.Get("Docker-Content-Digest") != wantDigest {
		t.Errorf("PUT %s: Docker-Content-Digest %q, want %q", url, resp.Header.Get("Docker-Content-Digest"), wantDigest)
	}
}
