package admission

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestExemptTag(t *testing.T) {
	t.Parallel()
	subject := digest.FromString("image")
	hex := subject.Encoded()
	sigRef := digest.FromString("signature")
	otherRef := digest.FromString("other")
	stored := map[digest.Digest]digest.Digest{sigRef: subject, otherRef: digest.FromString("another image")}
	subjectOf := func(_ context.Context, d digest.Digest) (digest.Digest, error) {
		s, ok := stored[d]
		if !ok {
			return "", errors.New("not found")
		}
		return s, nil
	}
	manifest := func(layerTypes ...string) []byte {
		m := v1.Manifest{MediaType: v1.MediaTypeImageManifest, Config: v1.Descriptor{MediaType: v1.MediaTypeImageConfig}}
		for _, lt := range layerTypes {
			m.Layers = append(m.Layers, v1.Descriptor{MediaType: lt, Digest: digest.FromString(lt)})
		}
		b, _ := json.Marshal(m)
		return b
	}
	index := func(entries ...v1.Descriptor) []byte {
		b, _ := json.Marshal(v1.Index{MediaType: v1.MediaTypeImageIndex, Manifests: entries})
		return b
	}
	const tarLayer = "application/vnd.oci.image.layer.v1.tar+gzip"
	tests := []struct {
		name     string
		tag      string
		manifest []byte
		want     bool
	}{
		{"cosign signature", "sha256-" + hex + ".sig", manifest("application/vnd.dev.cosign.simplesigning.v1+json"), true},
		{"cosign attestation", "sha256-" + hex + ".att", manifest("application/vnd.dsse.envelope.v1+json"), true},
		{"cosign sbom", "sha256-" + hex + ".sbom", manifest("text/spdx+json"), true},
		{"image under .att", "sha256-" + hex + ".att", manifest(tarLayer), false},
		{"image under .sig", "sha256-" + hex + ".sig", manifest("application/vnd.dev.cosign.simplesigning.v1+json", tarLayer), false},
		{"image under .sbom", "sha256-" + hex + ".sbom", manifest(tarLayer), false},
		{"no layers", "sha256-" + hex + ".sig", manifest(), false},
		{"plain tag", "v1", manifest("application/vnd.dev.cosign.simplesigning.v1+json"), false},
		{"referrers index", "sha256-" + hex, index(v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: sigRef, ArtifactType: "application/vnd.cncf.notary.signature"}), true},
		{"empty referrers index", "sha256-" + hex, index(), true},
		{"index of another subject's referrer", "sha256-" + hex, index(v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: otherRef}), false},
		{"index of an unknown manifest", "sha256-" + hex, index(v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: digest.FromString("x")}), false},
		{"runnable index", "sha256-" + hex, index(v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: sigRef, Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}), false},
		{"image under the referrers tag", "sha256-" + hex, manifest(tarLayer), false},
		{"upper-case hex", "sha256-" + strings.ToUpper(hex) + ".sig", manifest("application/vnd.dev.cosign.simplesigning.v1+json"), false},
		{"not JSON", "sha256-" + hex + ".sig", []byte("{"), false},
	}
	for _, tt := range tests {
		if got := ExemptTag(context.Background(), tt.tag, tt.manifest, subjectOf); got != tt.want {
			t.Errorf("%s: ExemptTag = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// FuzzExemptTag: any manifest body under any tag is judged without panic,
// and only a signature tag can be exempt.
func FuzzExemptTag(f *testing.F) {
	hex := digest.FromString("image").Encoded()
	f.Add("sha256-"+hex+".sig", []byte(`{"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json"}]}`))
	f.Add("sha256-"+hex, []byte(`{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"digest":"sha256:`+hex+`"}]}`))
	f.Add("v1", []byte(`{}`))
	f.Fuzz(func(t *testing.T, tag string, body []byte) {
		exempt := ExemptTag(context.Background(), tag, body, func(context.Context, digest.Digest) (digest.Digest, error) {
			return digest.NewDigestFromEncoded(digest.SHA256, hex), nil
		})
		if exempt && !signatureTag().MatchString(tag) {
			t.Errorf("tag %q exempt", tag)
		}
	})
}
