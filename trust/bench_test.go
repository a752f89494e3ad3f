package trust_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/trust"
)

// BenchmarkVerify measures one Verify of a manifest with one signature of
// each kind (the real signatures in testdata), cold (every result expired
// from the cache) and cached. Content is in memory, so this is the cost of
// parsing and cryptography, not of storage.
func BenchmarkVerify(b *testing.B) {
	read := func(name string, dst ...any) {
		b.Helper()
		data, err := readCorpus(name)
		if err != nil {
			b.Fatal(err)
		}
		if err := unquoteCorpus(data, dst...); err != nil {
			b.Fatal(err)
		}
	}
	var bundle, jws, cose, payload []byte
	var sig string
	read("FuzzBundle/real", &bundle)
	read("FuzzNotation/jws", &jws, new(bool))
	read("FuzzNotation/cose", &cose, new(bool))
	read("FuzzLegacy/real", &payload, &sig)

	kinds := []struct {
		name  string
		setup func(c *memContent, target v1.Descriptor)
	}{
		{"cosign-bundle", func(c *memContent, target v1.Descriptor) {
			attach(c, target, "application/vnd.dev.sigstore.bundle.v0.3+json", "application/vnd.dev.sigstore.bundle.v0.3+json", bundle)
		}},
		{"cosign-legacy", func(c *memContent, target v1.Descriptor) {
			layer := c.putBlob("application/vnd.dev.cosign.simplesigning.v1+json", payload)
			layer.Annotations = map[string]string{"dev.cosignproject.cosign/signature": sig}
			d := c.putManifest(v1.MediaTypeImageManifest, v1.Manifest{MediaType: v1.MediaTypeImageManifest, Layers: []v1.Descriptor{layer}})
			c.tags["sha256-"+target.Digest.Encoded()+".sig"] = d
		}},
		{"notation-jws", func(c *memContent, target v1.Descriptor) {
			attach(c, target, "application/vnd.cncf.notary.signature", "application/jose+json", jws)
		}},
		{"notation-cose", func(c *memContent, target v1.Descriptor) {
			attach(c, target, "application/vnd.cncf.notary.signature", "application/cose", cose)
		}},
	}
	for _, k := range kinds {
		for _, cached := range []bool{false, true} {
			name := k.name + "/cold"
			if cached {
				name = k.name + "/cached"
			}
			b.Run(name, func(b *testing.B) {
				c := newMemContent()
				target := seedTarget(b, c)
				k.setup(c, target)
				now := time.Unix(1_800_000_000, 0)
				clock := func() time.Time {
					if !cached {
						now = now.Add(time.Hour) // every cached result has expired
					}
					return now
				}
				cfg := config.Trust{
					Keys:        []config.TrustKey{{Name: "release", File: filepath.Join("testdata", "release.pub")}},
					TrustStores: []config.TrustStore{{Name: "alpha", Files: []string{filepath.Join("testdata", "alpha.crt")}}},
					Identities:  []config.TrustIdentity{{Name: "alpha", TrustStores: []string{"ca:alpha"}, TrustedIdentities: []string{"*"}}},
					Policies:    []config.TrustPolicy{{Repositories: []string{"team/**"}, Signers: []string{"release", "alpha"}}},
				}
				cfg.Provision()
				v, err := trust.New(cfg, c, trust.Options{Now: clock})
				if err != nil {
					b.Fatal(err)
				}
				ctx := context.Background()
				verdict, err := v.Verify(ctx, seedRepo, target.Digest)
				if err != nil || len(verdict.Signatures) != 1 {
					b.Fatalf("verify: %v %+v", err, verdict)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if _, err := v.Verify(ctx, seedRepo, target.Digest); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func readCorpus(name string) ([]byte, error) {
	return os.ReadFile(filepath.Join("testdata", "fuzz", name))
}
