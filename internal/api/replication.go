package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	dauth "github.com/distribution/distribution/v3/registry/auth"

	"github.com/portcullis/portcullis/internal/replicate"
)

// replicationPath is the replication status; replicationPath/<rule>/run
// starts a run of the rule.
const replicationPath = Prefix + "replication"

// Replication reports the replication rules and runs them on demand.
type Replication interface {
	Status(ctx context.Context) []replicate.RuleStatus
	Trigger(rule string) error
}

// serveReplication answers GET /api/v1/replication with {"rules": [...]}
// and POST /api/v1/replication/<rule>/run with 202 (the run starts on this
// replica, or on the one holding the rule's lease). Both need the catalog
// scope with auth on: the status names repositories across the registry.
func (h *Handler) serveReplication(w http.ResponseWriter, r *http.Request) {
	if !h.catalogScope(w, r, "replication status and runs") {
		return
	}
	rest := strings.TrimPrefix(r.URL.Path, replicationPath)
	switch {
	case rest == "" && r.Method == http.MethodGet:
		rules := []replicate.RuleStatus{}
		if h.replication != nil {
			rules = h.replication.Status(r.Context())
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"rules": rules})
	case strings.HasPrefix(rest, "/") && strings.HasSuffix(rest, "/run") && r.Method == http.MethodPost:
		name := strings.TrimSuffix(strings.TrimPrefix(rest, "/"), "/run")
		err := replicate.ErrUnknownRule
		if h.replication != nil {
			err = h.replication.Trigger(name)
		}
		if errors.Is(err, replicate.ErrUnknownRule) {
			h.writeError(w, r, Status(http.StatusNotFound, "NAME_UNKNOWN", "no replication rule "+quoteShort(name)))
			return
		}
		if err != nil {
			h.writeError(w, r, Internal("could not start the replication run", err))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(map[string]any{"rule": name, "started": true})
	default:
		h.writeError(w, r, Status(http.StatusNotFound, "UNSUPPORTED", "no such API endpoint: "+r.Method+" "+quoteShort(r.URL.Path)))
	}
}

// catalogScope answers the request with an error and returns false when
// auth is on and the caller lacks the catalog scope (registry:catalog:*).
func (h *Handler) catalogScope(w http.ResponseWriter, r *http.Request, what string) bool {
	if h.auth == nil {
		return true
	}
	_, err := h.auth.Authorize(r, dauth.Access{Resource: dauth.Resource{Type: "registry", Name: "catalog"}, Action: "*"})
	var ch dauth.Challenge
	switch {
	case errors.As(err, &ch):
		h.writeError(w, r, err)
		return false
	case err != nil:
		h.writeError(w, r, errcode.ErrorCodeDenied.WithMessage(what+" need the catalog scope (registry:catalog:*)"))
		return false
	}
	return true
}
