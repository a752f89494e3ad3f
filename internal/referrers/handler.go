package referrers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"

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
	q := r.URL.Query()
	var after digest.Digest
	if last := q.Get("last"); last != "" {
		d, err := digest.Parse(last)
		if err != nil {
			_ = errcode.ServeJSON(w, errcode.ErrorCodeDigestInvalid.WithMessage("last must be a referrer digest from a Link header"))
			return
		}
		after = d
	}
	filter := q["artifactType"]
	descs := []v1.Descriptor{}
	size := 0
	var lastTaken digest.Digest
	more, err := h.walk(ctx, name, subject, after, func(d v1.Descriptor) bool {
		if len(filter) > 0 && !slices.Contains(filter, d.ArtifactType) {
			lastTaken = d.Digest
			return true
		}
		n := descriptorSize(d)
		if len(descs) > 0 && (len(descs) == maxPageDescriptors || size+n > maxPageBytes) {
			return false
		}
		descs = append(descs, d)
		size += n
		lastTaken = d.Digest
		return true
	})
	if err != nil {
		api.WriteError(w, r, h.log, api.Internal("could not read the referrers index",
			fmt.Errorf("list referrers of %s@%s: %w", name, subject, err)))
		return
	}
	if len(filter) > 0 {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	if more {
		next := url.Values{"last": {lastTaken.String()}}
		if len(filter) > 0 {
			next["artifactType"] = filter
		}
		w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, r.URL.Path, next.Encode()))
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

// walk is Index.Walk after rebuilding an incomplete index.
func (h *Handler) walk(ctx context.Context, name string, subject, after digest.Digest, fn func(v1.Descriptor) bool) (bool, error) {
	if err := h.ensureComplete(ctx, name); err != nil {
		return false, err
	}
	return h.index.Walk(ctx, name, subject, after, fn)
}

// ensureComplete rebuilds repository name's index from its manifests when it
// is incomplete.
func (h *Handler) ensureComplete(ctx context.Context, name string) error {
	complete, err := h.index.Complete(ctx, name)
	if err != nil || complete {
		return err
	}
	named, err := reference.WithName(name)
	if err != nil {
		return err
	}
	repo, err := h.repos.Repository(ctx, named)
	if err != nil {
		return err
	}
	return h.index.Rebuild(ctx, repo)
}

// List returns the referrers of subject in repository name, rebuilding the
// repository's index from its manifests first if it is incomplete.
func (h *Handler) List(ctx context.Context, name string, subject digest.Digest) ([]v1.Descriptor, error) {
	if err := h.ensureComplete(ctx, name); err != nil {
		return nil, err
	}
	return h.index.List(ctx, name, subject)
}
