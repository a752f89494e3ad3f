package scan

import (
	"encoding/json"

	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ManifestKind tells a container image from an index and from anything
// else. Its values are stored (the scanner's metadata database): append
// only.
type ManifestKind int

// The kinds of manifest.
const (
	// KindOther is an artifact (a signature, an SBOM, a scan report), an
	// attestation manifest, or a manifest that does not parse.
	KindOther ManifestKind = iota
	// KindImage is a container image: an image config and its layers.
	KindImage
	// KindIndex is an image index or Docker manifest list.
	KindIndex
)

// mediaTypeInToto is the layer media type of attestation manifests
// (BuildKit's provenance and SBOM attestations, listed in an index next to
// the images they describe).
const mediaTypeInToto = "application/vnd.in-toto+json"

// Classify tells what a manifest of media type mt (the body's own
// mediaType wins) is. A subject does not make an image an artifact: what
// a manifest is depends on its config and layers only.
func Classify(mt string, payload []byte) ManifestKind {
	var m struct {
		MediaType string `json:"mediaType"`
		Config    struct {
			MediaType string `json:"mediaType"`
		} `json:"config"`
		Layers []struct {
			MediaType string `json:"mediaType"`
		} `json:"layers"`
	}
	if json.Unmarshal(payload, &m) != nil {
		return KindOther
	}
	attestation := len(m.Layers) > 0
	for _, l := range m.Layers {
		attestation = attestation && l.MediaType == mediaTypeInToto
	}
	if attestation {
		return KindOther
	}
	if m.MediaType != "" {
		mt = m.MediaType
	}
	switch types.MediaType(mt) {
	case types.OCIImageIndex, types.DockerManifestList:
		return KindIndex
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
		if cmt := types.MediaType(m.Config.MediaType); cmt == types.OCIConfigJSON || cmt == types.DockerConfigJSON {
			return KindImage
		}
	}
	return KindOther
}
