package scanner

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/scan/artifact"
)

// ServeDocument answers GET .../manifests/<digest>/vulnerabilities (the
// newest report) and .../sbom (the newest CycloneDX SBOM) for repo@d.
func (s *Service) ServeDocument(w http.ResponseWriter, r *http.Request, repo string, d digest.Digest, what string) {
	ctx := r.Context()
	artifactType := artifact.ArtifactTypeReport
	if what == "sbom" {
		artifactType = artifact.ArtifactTypeSBOM
	}
	payload, ok, err := s.latest(ctx, repo, d, artifactType)
	if err != nil {
		_ = errcode.ServeJSON(w, errcode.ErrorCodeUnknown.WithMessage("could not read the image's "+what))
		return
	}
	if !ok {
		if reason := s.storedFailure(ctx, repo, d); reason != "" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnprocessableEntity)
			_ = json.NewEncoder(w).Encode(map[string]string{"verdict": "scan failed", "reason": reason})
			return
		}
		msg := "no " + what + " for " + repo + "@" + d.String() + " yet"
		if s.database() == nil {
			msg += ": no vulnerability database has been imported (registry vulndb import DIR)"
		}
		_ = errcode.ServeJSON(w, errcode.ErrorCodeManifestUnknown.WithMessage(msg))
		return
	}
	rp, err := s.open(ctx, repo)
	if err != nil {
		_ = errcode.ServeJSON(w, errcode.ErrorCodeNameInvalid.WithMessage(err.Error()))
		return
	}
	var man v1.Manifest
	if json.Unmarshal(payload, &man) != nil || len(man.Layers) == 0 {
		_ = errcode.ServeJSON(w, errcode.ErrorCodeUnknown.WithMessage("malformed "+what+" artifact"))
		return
	}
	doc, err := rp.Blobs(ctx).Get(ctx, man.Layers[0].Digest)
	if err != nil {
		_ = errcode.ServeJSON(w, errcode.ErrorCodeBlobUnknown)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.Copy(w, bytes.NewReader(doc))
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
