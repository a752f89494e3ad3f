package referrers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/internal/api"
)

// repositories opens repositories by name.
type repositories interface {
	Repository(ctx context.Context, name reference.Named) (distribution.Repository, error)
}

// Handler serves GET /v2/<name>/referrers/<digest>.
type Handler struct {
	index *Index
	repos repositories
	log   *slog.Logger
}

// NewHandler returns a referrers API handler reading index and, to rebuild
// an incomplete index, the repositories in repos.
func NewHandler(index *Index, repos repositories, log *slog.Logger) (*Handler, error) {
	if index == nil || repos == nil || log == nil {
		return nil, errors.New("referrers handler: index, repositories and logger are required")
	}
	return &Handler{index: index, repos: repos, log: log}, nil
}

// ServeHTTP answers GET /v2/<name>/referrers/<subject>; name and subject
// are already validated.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, name string, subject digest.Digest) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		api.WriteError(w, r, h.log, errcode.ErrorCodeUnsupported.WithMessage("the referrers API supports GET and HEAD"))
		return
	}
	ctx := r.Context()
	descs, err := h.List(ctx, name, subject)
	if err != nil {
		api.WriteError(w, r, h.log, api.Internal("could not read the referrers index",
			fmt.Errorf("list referrers of %s@%s: %w", name, subject, err)))
		return
	}
	filter := r.URL.Query()["artifactType"]
	if len(filter) > 0 {
		descs = filterByType(descs, filter)
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	body, err := json.Marshal(v1.Index{
		Versioned: specsVersioned,
		MediaType: v1.MediaTypeImageIndex,
		Manifests: descs,
	})
	if err != nil {
		api.WriteError(w, r, h.log, api.Internal("could not encode the referrers index", err))
		return
	}
	w.Header().Set("Content-Type", v1.MediaTypeImageIndex)
	w.Header().Set("Content-Length", itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

// List returns the referrers of subject in repository name, rebuilding the
// repository's index from its manifests first if it is incomplete.
func (h *Handler) List(ctx context.Context, name string, subject digest.Digest) ([]v1.Descriptor, error) {
	complete, err := h.index.Complete(ctx, name)
	if err != nil {
		return nil, err
	}
	if !complete {
		named, err := reference.WithName(name)
		if err != nil {
			return nil, err
		}
		repo, err := h.repos.Repository(ctx, named)
		if err != nil {
			return nil, err
		}
		if err := h.index.Rebuild(ctx, repo); err != nil {
			return nil, err
		}
	}
	return h.index.List(ctx, name, subject)
}

func filterByType(descs []v1.Descriptor, types []string) []v1.Descriptor {
	out := descs[:0]
	for _, d := range descs {
		for _, t := range types {
			if d.ArtifactType == t {
				out = append(out, d)
				break
			}
		}
	}
	return out
}
