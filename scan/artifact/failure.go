package artifact

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The scan failure artifact: the verdict "scan failed" of an image, kept in storage next
// to its reports. Its type is reserved (Reserved): only the registry writes it.
const (
	ArtifactTypeFailure = "application/vnd.portcullis.scan.failure.v1+json"
	// MediaTypeFailure is the Failure JSON layer of a failure artifact.
	MediaTypeFailure = ArtifactTypeFailure
	// AnnotationStatus is a scan verdict artifact's status: "failed" on a failure artifact.
	AnnotationStatus = "io.portcullis.scan.status"
	// StatusFailed is AnnotationStatus and Failure.Status of a failure artifact.
	StatusFailed = "failed"
)

// Failure is the document of a failure artifact.
type Failure struct {
	// Status is StatusFailed.
	Status string `json:"status"`
	// Reason says why the image could not be scanned, in one line ("scan failed: ...").
	Reason string `json:"reason"`
}

// FailureArtifact packs the verdict "scan failed" of subject (the image's manifest
// descriptor) and its reason as a referrer: the empty config and one MediaTypeFailure
// layer, annotated with the created time and AnnotationStatus. Like reports, the newest
// verdict artifact of an image (by created time) is its verdict. It returns
// ErrInvalidArtifact for an invalid subject.
func FailureArtifact(subject ocispec.Descriptor, reason string, createdAt time.Time) (*Artifact, error) {
	doc, err := json.Marshal(Failure{Status: StatusFailed, Reason: reason})
	if err != nil {
		return nil, fmt.Errorf("encode failure: %w", err)
	}
	annotations := map[string]string{
		ocispec.AnnotationCreated: created(createdAt),
		AnnotationStatus:          StatusFailed,
	}
	return referrer(ArtifactTypeFailure, MediaTypeFailure, subject, doc, annotations)
}

// ReadFailure reads a failure artifact. It returns its document and manifest, or the
// errors of ReadReport; a document whose status is not StatusFailed or without a reason is
// ErrInvalidArtifact.
func ReadFailure(ctx context.Context, fetch Fetch, manifest []byte) (*Failure, *ocispec.Manifest, error) {
	m, doc, err := readDocument(ctx, fetch, manifest, ArtifactTypeFailure, MediaTypeFailure)
	if err != nil {
		return nil, nil, err
	}
	var f Failure
	if err := json.Unmarshal(doc, &f); err != nil {
		return nil, nil, fmt.Errorf("%w: failure: %v", ErrInvalidArtifact, err)
	}
	if f.Status != StatusFailed || f.Reason == "" {
		return nil, nil, fmt.Errorf("%w: failure: status %q, reason %q", ErrInvalidArtifact, f.Status, f.Reason)
	}
	return &f, m, nil
}
