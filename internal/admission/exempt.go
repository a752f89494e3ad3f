package admission

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// signatureTag matches the tags that hold signatures rather than images:
// cosign's older layout (sha256-<hex>.sig, .att, .sbom) and the OCI
// referrers tag schema (sha256-<hex>, an index of referrers, which notation
// writes by default on registries without the referrers API).
var signatureTag = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^sha256-([0-9a-f]{64})(\.sig|\.att|\.sbom)?$`) })

// signatureTagSubject returns the digest a signature tag names
// (sha256-<hex>... names sha256:<hex>); ok false for any other tag.
func signatureTagSubject(tag string) (digest.Digest, bool) {
	m := signatureTag().FindStringSubmatch(tag)
	if m == nil {
		return "", false
	}
	return digest.NewDigestFromEncoded(digest.SHA256, m[1]), true
}

// maxReferrersTagEntries bounds the entries of a referrers-schema index that
// ExemptTag checks; a larger index is gated like any tag.
const maxReferrersTagEntries = 1000

// SubjectReader returns the subject of a stored manifest ("" when it has
// none); an error when the manifest cannot be read.
type SubjectReader func(ctx context.Context, d digest.Digest) (digest.Digest, error)

// ExemptTag reports whether a manifest PUT to tag is exempt from the tag
// gate because the tag is one of the signature tags and the manifest holds
// that kind of artifact: cosign simple-signing layers under .sig, DSSE
// envelopes under .att, SPDX or CycloneDX documents under .sbom, and under
// sha256-<hex> an index whose every entry is a stored manifest whose
// subject is sha256:<hex>. Anything else under such a tag (a runnable
// image, say) is gated like any other tag.
func ExemptTag(ctx context.Context, tag string, manifest []byte, subjectOf SubjectReader) bool {
	m := signatureTag().FindStringSubmatch(tag)
	if m == nil {
		return false
	}
	var body struct {
		MediaType string          `json:"mediaType"`
		Config    *v1.Descriptor  `json:"config"`
		Layers    []v1.Descriptor `json:"layers"`
		Manifests []v1.Descriptor `json:"manifests"`
	}
	if json.Unmarshal(manifest, &body) != nil {
		return false
	}
	if m[2] == "" {
		return referrersIndex(ctx, digest.NewDigestFromEncoded(digest.SHA256, m[1]), body.MediaType, body.Layers, body.Manifests, subjectOf)
	}
	if len(body.Manifests) > 0 || len(body.Layers) == 0 || body.MediaType == v1.MediaTypeImageIndex {
		return false
	}
	for _, l := range body.Layers {
		if !signatureLayer(m[2], l.MediaType) {
			return false
		}
	}
	return true
}

// signatureLayer reports whether a layer of mediaType belongs under a tag
// with suffix (.sig, .att or .sbom).
func signatureLayer(suffix, mediaType string) bool {
	switch suffix {
	case ".sig":
		return mediaType == "application/vnd.dev.cosign.simplesigning.v1+json"
	case ".att":
		return mediaType == "application/vnd.dsse.envelope.v1+json"
	default:
		mt := strings.ToLower(mediaType)
		return strings.Contains(mt, "spdx") || strings.Contains(mt, "cyclonedx") || strings.Contains(mt, "syft")
	}
}

// referrersIndex reports whether an index lists only stored manifests that
// refer to subject: the OCI referrers tag schema.
func referrersIndex(ctx context.Context, subject digest.Digest, mediaType string, layers, entries []v1.Descriptor, subjectOf SubjectReader) bool {
	if mediaType != v1.MediaTypeImageIndex || len(layers) > 0 || len(entries) > maxReferrersTagEntries {
		return false
	}
	for _, e := range entries {
		if e.Platform != nil {
			return false
		}
		s, err := subjectOf(ctx, e.Digest)
		if err != nil || s != subject {
			return false
		}
	}
	return true
}
