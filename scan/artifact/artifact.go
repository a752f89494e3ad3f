package artifact

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Artifact types (the manifest's artifactType) and media types of their blobs.
const (
	ArtifactTypeVulnDB    = "application/vnd.portcullis.vulndb.v1+json"
	MediaTypeVulnDBConfig = "application/vnd.portcullis.vulndb.config.v1+json"
	// MediaTypeVulnDBLayer is one ecosystem's all.zip of OSV records.
	MediaTypeVulnDBLayer = "application/vnd.portcullis.vulndb.osv.v1+zip"

	ArtifactTypeReport = "application/vnd.portcullis.scan.report.v1+json"
	// MediaTypeReport is the scan.Report JSON layer of a report artifact.
	MediaTypeReport = ArtifactTypeReport

	ArtifactTypeSBOM = "application/vnd.cyclonedx+json"
	// MediaTypeSBOM is the CycloneDX JSON layer of an SBOM artifact.
	MediaTypeSBOM = ArtifactTypeSBOM

	ArtifactTypeInventory = "application/vnd.portcullis.scan.inventory.v1+json"
	// MediaTypeInventory is the scan.StoredInventory JSON layer of an inventory artifact.
	MediaTypeInventory = ArtifactTypeInventory
)

// Reserved reports whether mediaType, a manifest's artifactType or config media type, is
// one of the registry's own: the vulnerability database's and the scanner's report and
// inventory (application/vnd.portcullis.vulndb.* and application/vnd.portcullis.scan.*,
// compared without case). The registry writes these to storage itself and refuses them from
// clients, so that the scanner can trust the ones it finds. The SBOM's type is CycloneDX's
// own, which clients push too: it is not reserved, and the scanner's SBOMs are told apart by
// their reserved annotations (ReservedAnnotation).
func Reserved(mediaType string) bool {
	t := strings.ToLower(strings.TrimSpace(mediaType))
	return strings.HasPrefix(t, reservedScan) || strings.HasPrefix(t, reservedVulnDB)
}

// ReservedAnnotation reports whether an annotation key is one of the registry's own
// (io.portcullis.scan.*, io.portcullis.vulndb.*, compared without case), which only the
// registry writes: the scanner tells its own SBOMs from clients' by them.
func ReservedAnnotation(key string) bool {
	k := strings.ToLower(strings.TrimSpace(key))
	return strings.HasPrefix(k, "io.portcullis.scan.") || strings.HasPrefix(k, "io.portcullis.vulndb.")
}

// ReservedIn names what in a manifest body is reserved for the registry:
// a reserved artifactType or config media type (Reserved), or a reserved
// annotation key (ReservedAnnotation), quoted and cut to 80 bytes (it comes
// from a client or a remote); "" when nothing is. What decodes is checked
// even when another field does not.
func ReservedIn(manifest []byte) string {
	var m struct {
		ArtifactType string `json:"artifactType"`
		Config       struct {
			MediaType string `json:"mediaType"`
		} `json:"config"`
		Annotations map[string]string `json:"annotations"`
	}
	_ = json.Unmarshal(manifest, &m)
	for _, t := range []string{m.ArtifactType, m.Config.MediaType} {
		if Reserved(t) {
			return "artifact type " + quoteShort(t)
		}
	}
	for k := range m.Annotations {
		if ReservedAnnotation(k) {
			return "annotation " + quoteShort(k)
		}
	}
	return ""
}

func quoteShort(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return strconv.Quote(s)
}

// The prefixes of the reserved types.
const (
	reservedScan   = "application/vnd.portcullis.scan."
	reservedVulnDB = "application/vnd.portcullis.vulndb."
)

// Annotation keys. Artifacts also carry ocispec.AnnotationCreated; database layers carry
// ocispec.AnnotationTitle "<Ecosystem>/all.zip", so `oras pull` writes a bundle directory.
const (
	// AnnotationEcosystem names a database layer's ecosystem ("Go", "Debian").
	AnnotationEcosystem = "io.portcullis.vulndb.ecosystem"
	// AnnotationDBDigest is the database version (vulndb.DB.Digest), on database artifacts
	// and on the reports matched against it.
	AnnotationDBDigest = "io.portcullis.vulndb.digest"
	// AnnotationDBModified is the database's latest record modification time, RFC 3339.
	AnnotationDBModified = "io.portcullis.vulndb.modified"
	// AnnotationFindings is a report's number of findings.
	AnnotationFindings = "io.portcullis.scan.findings"
	// AnnotationSeverityPrefix followed by a lower-case level (critical, high, medium, low,
	// unknown) is a report's number of findings of that severity.
	AnnotationSeverityPrefix = "io.portcullis.scan.severity."
	// AnnotationPackages is the number of packages of an inventory, SBOM or report.
	AnnotationPackages = "io.portcullis.scan.packages"
)

// Size limits of what readers accept.
const (
	// MaxManifestBytes is the largest manifest accepted (distribution's own limit).
	MaxManifestBytes = 4 << 20
	// MaxConfigBytes is the largest database config accepted.
	MaxConfigBytes = 1 << 20
	// MaxDocumentBytes is the largest report, SBOM or inventory accepted.
	MaxDocumentBytes = 64 << 20
)

// Errors returned by the readers.
var (
	// ErrInvalidArtifact is returned (wrapped, with the reason) when a manifest or a
	// config is malformed, of another artifact type, or inconsistent.
	ErrInvalidArtifact = errors.New("invalid artifact")
	// ErrBlobMismatch is returned when a fetched blob's size or digest is not its
	// descriptor's.
	ErrBlobMismatch = errors.New("blob does not match its descriptor")
	// ErrTooLarge is returned when a manifest or blob is over the size limits.
	ErrTooLarge = errors.New("artifact over size limit")
)

// Fetch opens a blob of the repository the artifact is in, by digest.
type Fetch func(ctx context.Context, dgst digest.Digest) (io.ReadCloser, error)

// Artifact is a built artifact: push the blobs, then the manifest.
type Artifact struct {
	// Manifest is the OCI image manifest, as pushed.
	Manifest []byte
	// Descriptor describes the manifest (media type, digest, size, artifact type and
	// annotations), as a referrers index lists it.
	Descriptor ocispec.Descriptor
	// Blobs are the config, then the layers, each once.
	Blobs []Blob
}

// Blob is one blob of an Artifact.
type Blob struct {
	ocispec.Descriptor
	// Open returns the content; it may be called more than once.
	Open func() (io.ReadCloser, error)
}

// emptyConfig is the OCI 1.1 empty config of artifacts that need none.
var emptyConfig = []byte("{}")

func bytesBlob(mediaType string, b []byte, annotations map[string]string) Blob {
	return Blob{
		Descriptor: ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b)), Annotations: annotations},
		Open:       func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
	}
}

// build writes the manifest of an artifact whose first blob is the config.
func build(artifactType string, subject *ocispec.Descriptor, blobs []Blob, annotations map[string]string) (*Artifact, error) {
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: artifactType,
		Config:       blobs[0].Descriptor,
		Layers:       []ocispec.Descriptor{},
		Subject:      subject,
		Annotations:  annotations,
	}
	for _, b := range blobs[1:] {
		m.Layers = append(m.Layers, b.Descriptor)
	}
	data, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return &Artifact{
		Manifest: data,
		Descriptor: ocispec.Descriptor{
			MediaType:    ocispec.MediaTypeImageManifest,
			ArtifactType: artifactType,
			Digest:       digest.FromBytes(data),
			Size:         int64(len(data)),
			Annotations:  annotations,
		},
		Blobs: dedupe(blobs),
	}, nil
}

func dedupe(blobs []Blob) []Blob {
	seen := map[digest.Digest]bool{}
	out := blobs[:0:0]
	for _, b := range blobs {
		if !seen[b.Digest] {
			seen[b.Digest] = true
			out = append(out, b)
		}
	}
	return out
}

// referrer builds an artifact with the empty config, one document layer and a subject.
func referrer(artifactType, mediaType string, subject ocispec.Descriptor, doc []byte, annotations map[string]string) (*Artifact, error) {
	if err := checkSubject(subject); err != nil {
		return nil, err
	}
	s := ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}
	blobs := []Blob{
		bytesBlob(ocispec.MediaTypeEmptyJSON, emptyConfig, nil),
		bytesBlob(mediaType, doc, nil),
	}
	return build(artifactType, &s, blobs, annotations)
}

func checkSubject(d ocispec.Descriptor) error {
	if d.MediaType == "" || d.Size <= 0 {
		return fmt.Errorf("%w: subject needs a media type and a size", ErrInvalidArtifact)
	}
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("%w: subject digest: %v", ErrInvalidArtifact, err)
	}
	return nil
}

func created(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// ParseManifest decodes an OCI image manifest and checks what every reader relies on: size,
// schema version 2, the OCI manifest media type, valid descriptors (config, layers, subject)
// with sha256 digests and sizes not negative. It returns ErrTooLarge or ErrInvalidArtifact.
func ParseManifest(data []byte) (*ocispec.Manifest, error) {
	if len(data) > MaxManifestBytes {
		return nil, fmt.Errorf("%w: manifest of %d bytes", ErrTooLarge, len(data))
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", ErrInvalidArtifact, err)
	}
	if m.SchemaVersion != 2 {
		return nil, fmt.Errorf("%w: schema version %d", ErrInvalidArtifact, m.SchemaVersion)
	}
	if m.MediaType != ocispec.MediaTypeImageManifest {
		return nil, fmt.Errorf("%w: media type %q, want %s", ErrInvalidArtifact, m.MediaType, ocispec.MediaTypeImageManifest)
	}
	check := func(what string, d ocispec.Descriptor) error {
		if d.MediaType == "" {
			return fmt.Errorf("%w: %s has no media type", ErrInvalidArtifact, what)
		}
		if err := d.Digest.Validate(); err != nil || d.Digest.Algorithm() != digest.SHA256 {
			return fmt.Errorf("%w: %s digest %q: want a sha256 digest", ErrInvalidArtifact, what, d.Digest)
		}
		if d.Size < 0 {
			return fmt.Errorf("%w: %s size %d", ErrInvalidArtifact, what, d.Size)
		}
		return nil
	}
	if err := check("config", m.Config); err != nil {
		return nil, err
	}
	for i, l := range m.Layers {
		if err := check("layer "+strconv.Itoa(i), l); err != nil {
			return nil, err
		}
	}
	if m.Subject != nil {
		if err := check("subject", *m.Subject); err != nil {
			return nil, err
		}
	}
	return &m, nil
}

// TypeOf returns a manifest's artifact type: artifactType, or else the config's media type,
// as the OCI spec defines it.
func TypeOf(m *ocispec.Manifest) string {
	if m.ArtifactType != "" {
		return m.ArtifactType
	}
	return m.Config.MediaType
}

// parseTyped parses a manifest of the given artifact type.
func parseTyped(data []byte, artifactType string) (*ocispec.Manifest, error) {
	m, err := ParseManifest(data)
	if err != nil {
		return nil, err
	}
	if t := TypeOf(m); t != artifactType {
		return nil, fmt.Errorf("%w: artifact type %q, want %s", ErrInvalidArtifact, t, artifactType)
	}
	return m, nil
}

// readBlob fetches a blob of at most max bytes and checks it against its descriptor.
func readBlob(ctx context.Context, fetch Fetch, d ocispec.Descriptor, max int64) ([]byte, error) {
	if d.Size > max {
		return nil, fmt.Errorf("%w: blob %s of %d bytes (limit %d)", ErrTooLarge, d.Digest, d.Size, max)
	}
	rc, err := fetch(ctx, d.Digest)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", d.Digest, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, d.Size+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", d.Digest, err)
	}
	if int64(len(b)) != d.Size {
		return nil, fmt.Errorf("%w: %s: got at least %d bytes, want %d", ErrBlobMismatch, d.Digest, len(b), d.Size)
	}
	if got := digest.FromBytes(b); got != d.Digest {
		return nil, fmt.Errorf("%w: %s has content %s", ErrBlobMismatch, d.Digest, got)
	}
	return b, nil
}

// readDocument reads the single document layer of a referrer artifact.
func readDocument(ctx context.Context, fetch Fetch, manifest []byte, artifactType, mediaType string) (*ocispec.Manifest, []byte, error) {
	m, err := parseTyped(manifest, artifactType)
	if err != nil {
		return nil, nil, err
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != mediaType {
		return nil, nil, fmt.Errorf("%w: want exactly one %s layer", ErrInvalidArtifact, mediaType)
	}
	b, err := readBlob(ctx, fetch, m.Layers[0], MaxDocumentBytes)
	if err != nil {
		return nil, nil, err
	}
	return m, b, nil
}
