package scanner

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/scan/artifact"
)

// ScanFailedError is returned by Document when the image has no document
// because its scan failed; Reason says why.
type ScanFailedError struct {
	Reason string
}

func (e *ScanFailedError) Error() string { return "scan failed: " + e.Reason }

// ScanFailure returns the reason the scan failed.
func (e *ScanFailedError) ScanFailure() string { return e.Reason }

// Document returns the newest document of the kind for repo@d, as JSON:
// "vulnerabilities" (the newest report) or "sbom" (the newest CycloneDX
// SBOM). It returns a *ScanFailedError when the image's scan failed, an
// errcode error for a document that is missing (MANIFEST_UNKNOWN, BLOB_UNKNOWN),
// malformed (UNKNOWN) or in a repository that cannot be opened
// (NAME_INVALID), and a wrapped storage error otherwise.
func (s *Service) Document(ctx context.Context, repo string, d digest.Digest, kind string) ([]byte, error) {
	artifactType := artifact.ArtifactTypeReport
	if kind == "sbom" {
		artifactType = artifact.ArtifactTypeSBOM
	}
	payload, ok, err := s.latest(ctx, repo, d, artifactType)
	if err != nil {
		return nil, fmt.Errorf("read the newest %s of %s@%s: %w", kind, repo, d, err)
	}
	if !ok {
		if reason := s.storedFailure(ctx, repo, d); reason != "" {
			return nil, &ScanFailedError{Reason: reason}
		}
		msg := "no " + kind + " for " + repo + "@" + d.String() + " yet"
		if s.database() == nil {
			msg += ": no vulnerability database has been imported (registry vulndb import DIR)"
		}
		return nil, errcode.ErrorCodeManifestUnknown.WithMessage(msg)
	}
	rp, err := s.open(ctx, repo)
	if err != nil {
		return nil, errcode.ErrorCodeNameInvalid.WithMessage(err.Error())
	}
	var man v1.Manifest
	if json.Unmarshal(payload, &man) != nil || len(man.Layers) == 0 {
		return nil, errcode.ErrorCodeUnknown.WithMessage("malformed " + kind + " artifact")
	}
	doc, err := rp.Blobs(ctx).Get(ctx, man.Layers[0].Digest)
	if err != nil {
		return nil, errcode.ErrorCodeBlobUnknown
	}
	return doc, nil
}

// storedFailure returns the reason of repo@d's scan failure: cached in the
// metadata database, or read from its newest failure artifact in storage;
// "" when it has none or storage cannot be read.
func (s *Service) storedFailure(ctx context.Context, repo string, d digest.Digest) string {
	if reason := s.store.failure(repo, d); reason != "" {
		return reason
	}
	descs, err := s.refs.List(ctx, repo, d)
	if err != nil {
		return ""
	}
	fail, ok := newest(descs, artifact.ArtifactTypeFailure)
	if !ok {
		return ""
	}
	reason, _ := s.readFailure(ctx, repo, d, fail)
	return reason
}
