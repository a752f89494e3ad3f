package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	dauth "github.com/distribution/distribution/v3/registry/auth"

	"github.com/portcullis/portcullis/internal/gc"
)

// gcRunsPath lists the last garbage collections.
const gcRunsPath = Prefix + "gc/runs"

// Collections reports the last garbage collections.
type Collections interface {
	Runs(ctx context.Context) ([]gc.Report, error)
}

// serveGCRuns answers GET /api/v1/gc/runs with {"runs": [...]}, newest
// first. The reports name repositories and tags across the registry: with
// auth on, only callers granted the catalog (registry:catalog:*) may read
// them.
func (h *Handler) serveGCRuns(w http.ResponseWriter, r *http.Request) {
	if h.auth != nil {
		_, err := h.auth.Authorize(r, dauth.Access{Resource: dauth.Resource{Type: "registry", Name: "catalog"}, Action: "*"})
		var ch dauth.Challenge
		switch {
		case errors.As(err, &ch):
			h.writeError(w, r, err)
			return
		case err != nil:
			h.writeError(w, r, errcode.ErrorCodeDenied.WithMessage("garbage collection reports need the catalog scope (registry:catalog:*)"))
			return
		}
	}
	runs := []gc.Report{}
	if h.gc != nil {
		var err error
		if runs, err = h.gc.Runs(r.Context()); err != nil {
			h.writeError(w, r, Internal("could not read the garbage collection reports", err))
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"runs": runs})
}
