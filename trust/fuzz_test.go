package trust_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/trust"
)

// The fuzz targets wrap their input in the OCI artifact the registry would
// hold and run the whole Verifier over it, against the real signatures in
// testdata (made by cosign and notation for testdata/target.json in
// repository team/seeds): parsing must never panic, and a signature may be
// valid only for the trusted signer and the digest asked about.

const seedRepo = "team/seeds"

// memContent is trust.Content over maps.
type memContent struct {
	manifests map[digest.Digest][]byte
	types     map[digest.Digest]string
	blobs     map[digest.Digest][]byte
	referrers map[digest.Digest][]v1.Descriptor
	tags      map[string]digest.Digest
}

func newMemContent() *memContent {
	return &memContent{
		manifests: map[digest.Digest][]byte{}, types: map[digest.Digest]string{},
		blobs: map[digest.Digest][]byte{}, referrers: map[digest.Digest][]v1.Descriptor{},
		tags: map[string]digest.Digest{},
	}
}

func (m *memContent) Manifest(_ context.Context, _ string, d digest.Digest) (string, []byte, error) {
	b, ok := m.manifests[d]
	if !ok {
		return "", nil, fmt.Errorf("manifest %s: %w", d, trust.ErrNotFound)
	}
	return m.types[d], b, nil
}

func (m *memContent) Blob(_ context.Context, _ string, d digest.Digest, max int64) ([]byte, error) {
	b, ok := m.blobs[d]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", d, trust.ErrNotFound)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("blob %s: %w", d, trust.ErrTooLarge)
	}
	return b, nil
}

func (m *memContent) Referrers(_ context.Context, _ string, subject digest.Digest) ([]v1.Descriptor, error) {
	return m.referrers[subject], nil
}

func (m *memContent) ResolveTag(_ context.Context, _ string, tag string) (digest.Digest, error) {
	d, ok := m.tags[tag]
	if !ok {
		return "", fmt.Errorf("tag %s: %w", tag, trust.ErrNotFound)
	}
	return d, nil
}

func (m *memContent) putManifest(mediaType string, v any) digest.Digest {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	d := digest.FromBytes(b)
	m.manifests[d], m.types[d] = b, mediaType
	return d
}

func (m *memContent) putBlob(mediaType string, b []byte) v1.Descriptor {
	d := digest.FromBytes(b)
	m.blobs[d] = b
	return v1.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
}

// seedTarget loads the signed manifest into c and returns its descriptor.
func seedTarget(t testing.TB, c *memContent) v1.Descriptor {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "target.json"))
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(b)
	mt := "application/vnd.docker.distribution.manifest.v2+json"
	c.manifests[d], c.types[d] = b, mt
	return v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}
}

// seedVerifier trusts the key and certificate in testdata for team/**.
func seedVerifier(t testing.TB, c trust.Content) *trust.Verifier {
	t.Helper()
	cfg := config.Trust{
		Keys:        []config.TrustKey{{Name: "release", File: filepath.Join("testdata", "release.pub")}},
		TrustStores: []config.TrustStore{{Name: "alpha", Files: []string{filepath.Join("testdata", "alpha.crt")}}},
		Identities:  []config.TrustIdentity{{Name: "alpha", TrustStores: []string{"ca:alpha"}, TrustedIdentities: []string{"*"}}},
		Policies:    []config.TrustPolicy{{Repositories: []string{"team/**"}, Signers: []string{"release", "alpha"}}},
	}
	cfg.Provision()
	v, err := trust.New(cfg, c, trust.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// attach stores data as the single layer of a referrer of target.
func attach(c *memContent, target v1.Descriptor, artifactType, layerType string, data []byte) {
	layer := c.putBlob(layerType, data)
	empty := c.putBlob("application/vnd.oci.empty.v1+json", []byte("{}"))
	d := c.putManifest(v1.MediaTypeImageManifest, v1.Manifest{
		MediaType: v1.MediaTypeImageManifest, ArtifactType: artifactType,
		Config: empty, Layers: []v1.Descriptor{layer}, Subject: &target,
	})
	c.referrers[target.Digest] = append(c.referrers[target.Digest], v1.Descriptor{
		MediaType: v1.MediaTypeImageManifest, ArtifactType: artifactType, Digest: d,
		Size: int64(len(c.manifests[d])),
	})
}

// check runs the Verifier and checks the invariants every input must keep.
func check(t *testing.T, v *trust.Verifier, target v1.Descriptor) trust.Verdict {
	verdict, err := v.Verify(context.Background(), seedRepo, target.Digest)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	for _, s := range verdict.Signatures {
		if s.Subject != target.Digest {
			t.Errorf("signature subject %s, want %s", s.Subject, target.Digest)
		}
		if s.Valid && s.Signer != "release" && s.Signer != "alpha" {
			t.Errorf("valid signature from %q", s.Signer)
		}
	}
	if verdict.Trusted != (len(verdict.Signers) > 0) {
		t.Errorf("trusted=%v with signers %v", verdict.Trusted, verdict.Signers)
	}
	return verdict
}

func FuzzBundle(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		c := newMemContent()
		target := seedTarget(t, c)
		attach(c, target, "application/vnd.dev.sigstore.bundle.v0.3+json", "application/vnd.dev.sigstore.bundle.v0.3+json", data)
		check(t, seedVerifier(t, c), target)
		_, _ = trust.ParseBundle(data)
	})
}

func FuzzNotation(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, cose bool) {
		c := newMemContent()
		target := seedTarget(t, c)
		mt := "application/jose+json"
		if cose {
			mt = "application/cose"
		}
		attach(c, target, "application/vnd.cncf.notary.signature", mt, data)
		check(t, seedVerifier(t, c), target)
	})
}

func FuzzLegacy(f *testing.F) {
	f.Fuzz(func(t *testing.T, payload []byte, sig string) {
		c := newMemContent()
		target := seedTarget(t, c)
		layer := c.putBlob("application/vnd.dev.cosign.simplesigning.v1+json", payload)
		layer.Annotations = map[string]string{"dev.cosignproject.cosign/signature": sig}
		cfg := c.putBlob(v1.MediaTypeImageConfig, []byte("{}"))
		d := c.putManifest(v1.MediaTypeImageManifest, v1.Manifest{MediaType: v1.MediaTypeImageManifest, Config: cfg, Layers: []v1.Descriptor{layer}})
		c.tags["sha256-"+target.Digest.Encoded()+".sig"] = d
		verdict := check(t, seedVerifier(t, c), target)
		for _, s := range verdict.Signatures {
			if !s.Valid {
				continue
			}
			// A valid legacy signature binds this digest and repository.
			ss, err := trust.ParseSimpleSigning(payload)
			if err != nil {
				t.Fatalf("valid signature over an unparseable payload: %v", err)
			}
			if ss.Critical.Image.DockerManifestDigest != target.Digest.String() {
				t.Errorf("valid signature for %s", ss.Critical.Image.DockerManifestDigest)
			}
		}
	})
}

func FuzzParseSimpleSigning(f *testing.F) {
	f.Fuzz(func(t *testing.T, payload []byte) {
		ss, err := trust.ParseSimpleSigning(payload)
		if err != nil {
			return
		}
		if _, err := digest.Parse(ss.Critical.Image.DockerManifestDigest); err != nil {
			t.Errorf("accepted digest %q: %v", ss.Critical.Image.DockerManifestDigest, err)
		}
	})
}

// TestSeeds verifies the real cosign signatures in testdata offline, and
// what goes wrong when they are moved: another repository, another digest.
func TestSeeds(t *testing.T) {
	t.Parallel()
	read := func(name string) []byte {
		t.Helper()
		data, err := os.ReadFile(filepath.Join("testdata", "fuzz", name))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	var bundle []byte
	if err := unquoteCorpus(read("FuzzBundle/real"), &bundle); err != nil {
		t.Fatal(err)
	}
	var payload []byte
	var sig string
	if err := unquoteCorpus(read("FuzzLegacy/real"), &payload, &sig); err != nil {
		t.Fatal(err)
	}
	c := newMemContent()
	target := seedTarget(t, c)
	attach(c, target, "application/vnd.dev.sigstore.bundle.v0.3+json", "application/vnd.dev.sigstore.bundle.v0.3+json", bundle)
	layer := c.putBlob("application/vnd.dev.cosign.simplesigning.v1+json", payload)
	layer.Annotations = map[string]string{"dev.cosignproject.cosign/signature": sig}
	d := c.putManifest(v1.MediaTypeImageManifest, v1.Manifest{MediaType: v1.MediaTypeImageManifest, Layers: []v1.Descriptor{layer}})
	c.tags["sha256-"+target.Digest.Encoded()+".sig"] = d
	v := seedVerifier(t, c)

	verdict := check(t, v, target)
	if !verdict.Trusted || len(verdict.Signatures) != 2 || !verdict.Signatures[0].Valid || !verdict.Signatures[1].Valid {
		t.Fatalf("seeds: %s", dump(verdict))
	}
	verdict, err := v.Verify(context.Background(), "team/elsewhere", target.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if !verdict.Trusted || !verdict.Signatures[0].Valid || verdict.Signatures[1].Valid {
		t.Errorf("in another repository the bundle (not bound) counts and the legacy signature does not: %s", dump(verdict))
	}
}

// unquoteCorpus decodes a "go test fuzz v1" file into dst ([]byte and
// string and bool values, in order).
func unquoteCorpus(data []byte, dst ...any) error {
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != len(dst)+1 || lines[0] != "go test fuzz v1" {
		return fmt.Errorf("want %d values in a go test fuzz v1 file", len(dst))
	}
	for i, line := range lines[1:] {
		open := strings.IndexByte(line, '(')
		if open < 0 || !strings.HasSuffix(line, ")") {
			return fmt.Errorf("line %d: %q", i+2, line)
		}
		inner := line[open+1 : len(line)-1]
		if d, ok := dst[i].(*bool); ok {
			b, err := strconv.ParseBool(inner)
			if err != nil {
				return fmt.Errorf("line %d: %w", i+2, err)
			}
			*d = b
			continue
		}
		s, err := strconv.Unquote(inner)
		if err != nil {
			return fmt.Errorf("line %d: %w", i+2, err)
		}
		switch d := dst[i].(type) {
		case *[]byte:
			*d = []byte(s)
		case *string:
			*d = s
		default:
			return fmt.Errorf("unsupported %T", d)
		}
	}
	return nil
}

// TestRequireTransparencyLog: with the policy requiring a Rekor entry, the
// offline signatures in testdata are not valid.
func TestRequireTransparencyLog(t *testing.T) {
	t.Parallel()
	var bundle []byte
	data, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzBundle", "real"))
	if err != nil {
		t.Fatal(err)
	}
	if err := unquoteCorpus(data, &bundle); err != nil {
		t.Fatal(err)
	}
	rootFile := filepath.Join(t.TempDir(), "trusted_root.json")
	if err := os.WriteFile(rootFile, []byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newMemContent()
	target := seedTarget(t, c)
	attach(c, target, "application/vnd.dev.sigstore.bundle.v0.3+json", "application/vnd.dev.sigstore.bundle.v0.3+json", bundle)
	cfg := config.Trust{
		Keys:            []config.TrustKey{{Name: "release", File: filepath.Join("testdata", "release.pub")}},
		Policies:        []config.TrustPolicy{{Repositories: []string{"team/**"}, Signers: []string{"release"}, RequireTransparencyLog: true}},
		TrustedRootFile: rootFile,
	}
	v, err := trust.New(cfg, c, trust.Options{})
	if err != nil {
		t.Fatal(err)
	}
	verdict := check(t, v, target)
	if verdict.Trusted || len(verdict.Signatures) != 1 || !strings.Contains(verdict.Signatures[0].Reason, "log") {
		t.Errorf("verdict: %s", dump(verdict))
	}
}
