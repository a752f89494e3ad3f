package api

import (
	"context"
	"encoding/json"
	"net/http"
)

// cachesPath lists the pull-through caches.
const cachesPath = Prefix + "caches"

// Caches reports the pull-through caches.
type Caches interface {
	// Prefixes returns the caches' namespaces in configuration order.
	Prefixes() []string
	// Status returns what the cache at prefix holds and how its remote is
	// doing, as a JSON-encodable value.
	Status(ctx context.Context, prefix string) any
}

// serveCaches answers GET /api/v1/caches with the caches the caller may
// pull from: {"caches": [...]}. With auth on, a caller who may read none
// gets the challenge (anonymous) or 403.
func (h *Handler) serveCaches(w http.ResponseWriter, r *http.Request) {
	out := []any{}
	var refusal error
	if h.caches != nil {
		for _, p := range h.caches.Prefixes() {
			// Access is checked on a repository in the namespace: rules
			// are written for <prefix>/**.
			if c := Resolve(r, h.auth, p+"/library", "pull"); !c.Granted() {
				if refusal == nil {
					refusal = c.Err
				}
				continue
			}
			out = append(out, h.caches.Status(r.Context(), p))
		}
	}
	if len(out) == 0 && refusal != nil {
		h.writeError(w, r, refusal)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"caches": out})
}
