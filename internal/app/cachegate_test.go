package app_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"testing"

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
