package app_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
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
	"github.com/google/go-containerregistry/pkg/v1/static"

	"github.com/portcullis/portcullis/config"
)

// trustKeyFile writes a fresh ECDSA P-256 public key (PEM) and returns its
// path: a signer whose signatures nothing carries.
func trustKeyFile(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "cosign.pub")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// gatedCache runs a cache "hub" of u whose namespace is under a trust
// policy in mode (enforce; quarantine needs auth) that nothing upstream
// satisfies.
func gatedCache(t *testing.T, u *cacheUpstream, mode string) string {
	t.Helper()
	key := trustKeyFile(t)
	reg := startCache(t, u, func(c *config.Config) {
		c.Trust.Keys = []config.TrustKey{{Name: "release", File: key}}
		c.Trust.Policies = []config.TrustPolicy{{Repositories: []string{"hub/**"}, Mode: mode, Signers: []string{"release"}}}
	})
	return reg.URL
}

// TestCacheGatedBlobMiss: in a cache namespace under enforce, a layer of
// an unsigned upstream image is not served by digest: the gate that
// withholds its manifest withholds its blobs too, also while they are not
// stored yet (asked for before the manifest, they would be fetched and
// streamed from the remote unchecked).
func TestCacheGatedBlobMiss(t *testing.T) {
	t.Parallel()
	u := newCacheUpstream(t)
	img, layer, _ := blobImage(t, 4096)
	u.push("library/evil", "v1", img)
	url := gatedCache(t, u, "enforce")

	resp, body := get(t, http.MethodGet, url+"/v2/hub/library/evil/blobs/"+layer.String())
	if resp.StatusCode == http.StatusOK {
		t.Errorf("GET of the unsigned image's layer before its manifest: 200 (%d bytes), want it withheld", len(body))
	}
	resp, body = get(t, http.MethodGet, url+"/v2/hub/library/evil/manifests/v1")
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("GET of the unsigned manifest: %d, want 403: %s", resp.StatusCode, body)
	}
	resp, body = get(t, http.MethodGet, url+"/v2/hub/library/evil/blobs/"+layer.String())
	if resp.StatusCode == http.StatusOK {
		t.Errorf("GET of the unsigned image's layer after its manifest: 200 (%d bytes), want it withheld", len(body))
	}
}

// signedCache runs a cache "hub" of u under an enforce policy trusting
// one cosign key, and returns its URL and a function that pushes img to
// repo:tag upstream with a legacy cosign signature by that key.
func signedCache(t *testing.T, u *cacheUpstream) (string, func(repo, tag string, img v1.Image)) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "cosign.pub")
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := startCache(t, u, func(c *config.Config) {
		c.Trust.Keys = []config.TrustKey{{Name: "release", File: key}}
		c.Trust.Policies = []config.TrustPolicy{{Repositories: []string{"hub/**"}, Mode: "enforce", Signers: []string{"release"}}}
	})
	// push pushes img to repo:tag upstream, or with img nil signs what
	// repo:tag holds already.
	push := func(repo, tag string, img v1.Image) {
		var d v1.Hash
		if img != nil {
			d = u.push(repo, tag, img)
		} else {
			d = u.digestOf(repo, tag)
		}
		payload := fmt.Appendf(nil, `{"critical":{"identity":{"docker-reference":"example.com/%s"},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`, repo, d.String())
		sum := sha256.Sum256(payload)
		sig, err := ecdsa.SignASN1(crand.Reader, k, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		sigImg, err := mutate.Append(empty.Image, mutate.Addendum{
			Layer:       static.NewLayer(payload, "application/vnd.dev.cosign.simplesigning.v1+json"),
			Annotations: map[string]string{"dev.cosignproject.cosign/signature": base64.StdEncoding.EncodeToString(sig)},
		})
		if err != nil {
			t.Fatal(err)
		}
		u.push(repo, d.Algorithm+"-"+d.Hex+".sig", sigImg)
	}
	return reg.URL, push
}

// TestCacheGatedNewImageBlobs: in an enforce cache namespace, the layers of
// a signed image are served right after its manifest was cached, also when
// the gate indexed the repository's manifests a moment before (for
// another image): caching a manifest is a push as far as the gate knows.
func TestCacheGatedNewImageBlobs(t *testing.T) {
	t.Parallel()
	u := newCacheUpstream(t)
	url, push := signedCache(t, u)
	imgA, layerA, _ := blobImage(t, 2048)
	imgB, layerB, _ := blobImage(t, 2048)
	push("library/app", "a", imgA)
	push("library/app", "b", imgB)
	for _, step := range []struct{ what, path string }{
		{"manifest a", "/manifests/a"},
		{"layer of a", "/blobs/" + layerA.String()},
		{"manifest b", "/manifests/b"},
		{"layer of b", "/blobs/" + layerB.String()},
	} {
		resp, body := get(t, http.MethodGet, url+"/v2/hub/library/app"+step.path)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s of a signed image: %d, want 200: %.300s", step.what, resp.StatusCode, body)
		}
	}
}

// TestCacheGatedSignedIndex: in an enforce cache namespace, a multi-arch
// index signed as a whole is pulled like a client does: the index by tag,
// a child by digest, the child's layers (signed through the index).
func TestCacheGatedSignedIndex(t *testing.T) {
	t.Parallel()
	u := newCacheUpstream(t)
	url, sign := signedCache(t, u)
	idx, err := random.Index(1024, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(u.reg)
	ref, err := name.ParseReference(strings.TrimPrefix(srv.URL, "http://")+"/library/multi:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	sign("library/multi", "v1", nil)
	child := im.Manifests[0].Digest
	img, err := idx.Image(child)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	layer, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct{ what, path string }{
		{"index by tag", "/manifests/v1"},
		{"child by digest", "/manifests/" + child.String()},
		{"child's layer", "/blobs/" + layer.String()},
	} {
		resp, body := get(t, http.MethodGet, url+"/v2/hub/library/multi"+step.path)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s of a signed index: %d, want 200: %.300s", step.what, resp.StatusCode, body)
		}
	}
}

// digestOf returns the digest repo:tag has on the upstream.
func (u *cacheUpstream) digestOf(repo, tag string) v1.Hash {
	u.t.Helper()
	srv := httptest.NewServer(u.reg)
	defer srv.Close()
	ref, err := name.ParseReference(strings.TrimPrefix(srv.URL, "http://")+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		u.t.Fatal(err)
	}
	desc, err := remote.Head(ref)
	if err != nil {
		u.t.Fatalf("head %s upstream: %v", ref, err)
	}
	return desc.Digest
}
