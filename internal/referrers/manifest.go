package referrers

import (
	"strconv"

	"encoding/json"
	"fmt"
	"github.com/opencontainers/image-spec/specs-go"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// manifestFields are the parts of an OCI image manifest or index that the
// referrers API needs.
type manifestFields struct {
	MediaType    string            `json:"mediaType"`
	ArtifactType string            `json:"artifactType"`
	Config       *v1.Descriptor    `json:"config"`
	Subject      *v1.Descriptor    `json:"subject"`
	Annotations  map[string]string `json:"annotations"`
}

// Describe parses a manifest and returns the digest of its subject (empty if
// it has none) and the descriptor that lists it among that subject's
// referrers. mediaType is the stored media type; payload the exact bytes.
func Describe(mediaType string, payload []byte) (digest.Digest, v1.Descriptor, error) {
	var m manifestFields
	if err := json.Unmarshal(payload, &m); err != nil {
		return "", v1.Descriptor{}, fmt.Errorf("parse manifest: %w", err)
	}
	if m.MediaType != "" {
		mediaType = m.MediaType
	}
	desc := v1.Descriptor{
		MediaType:    mediaType,
		Digest:       digest.FromBytes(payload),
		Size:         int64(len(payload)),
		ArtifactType: m.ArtifactType,
		Annotations:  boundAnnotations(m.Annotations),
	}
	// An image manifest without artifactType is typed by its config.
	if desc.ArtifactType == "" && m.Config != nil && mediaType == v1.MediaTypeImageManifest {
		desc.ArtifactType = m.Config.MediaType
	}
	if m.Subject == nil {
		return "", desc, nil
	}
	if err := m.Subject.Digest.Validate(); err != nil {
		return "", v1.Descriptor{}, fmt.Errorf("manifest subject: %w", err)
	}
	return m.Subject.Digest, desc, nil
}

// SubjectOf returns the subject digest named by a manifest body, or "" when it
// names none or cannot be parsed.
func SubjectOf(payload []byte) digest.Digest {
	var m manifestFields
	if json.Unmarshal(payload, &m) != nil || m.Subject == nil || m.Subject.Digest.Validate() != nil {
		return ""
	}
	return m.Subject.Digest
}

var specsVersioned = specs.Versioned{SchemaVersion: 2}

func itoa(n int) string { return strconv.Itoa(n) }
