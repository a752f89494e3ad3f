package front

import (
	"errors"
	"net/http"
	"strings"

	"github.com/distribution/distribution/v3/registry/api/errcode"

	"github.com/portcullis/portcullis/internal/cache"
)

// routeCache maps a request into its cache namespace: containerd's ?ns=
// (the registry host a mirror stands in for) to the cache serving that
// host, and Docker Hub's one-word names to library/. It refuses writes into
// a cache namespace. It returns the request and route to go on with, or
// ok false when it has answered.
func (h *Handler) routeCache(w http.ResponseWriter, r *http.Request, rt Route) (*http.Request, Route, bool) {
	if h.cache == nil || rt.Name == "" {
		return r, rt, true
	}
	name := rt.Name
	if ns := queryValue(r, "ns"); ns != "" {
		routed, err := h.cache.Route(ns, name)
		if err != nil {
			// Answered at once, nothing dialled: containerd falls back
			// to the next host.
			h.writeError(w, r, errcode.ErrorCodeNameUnknown.WithMessage("no pull-through cache of this registry serves ns="+quoteShort(ns)))
			return r, rt, false
		}
		name = routed
	} else {
		name = h.cache.Canonical(name)
	}
	if name != rt.Name {
		r = renameRoute(r, rt.Name, name)
		rt.Name = name
	}
	if !h.cache.Owns(name) {
		return r, rt, true
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.writeError(w, r, errcode.ErrorCodeDenied.WithMessage(h.cache.Describe(name)))
		return r, rt, false
	}
	return r, rt, true
}

// renameRoute returns r with its repository name old replaced by name.
func renameRoute(r *http.Request, old, name string) *http.Request {
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/v2/" + name + strings.TrimPrefix(r.URL.Path, "/v2/"+old)
	r2.URL.RawPath = ""
	r2.RequestURI = r2.URL.RequestURI()
	return r2
}

// fillManifest makes a cached manifest present before it is read, and
// says how in the X-Portcullis-Cache header. A caller who may not pull is
// left to the registry's challenge, with nothing fetched for it.
func (h *Handler) fillManifest(w http.ResponseWriter, r *http.Request, rt Route) bool {
	if h.cache == nil || !h.cache.Owns(rt.Name) || !callerOf(r).Granted() {
		return true
	}
	ref := rt.Tag
	if ref == "" {
		ref = rt.Digest.String()
	}
	res, err := h.cache.Manifest(r.Context(), rt.Name, ref)
	if err != nil {
		if errors.Is(err, r.Context().Err()) {
			return false // the client is gone
		}
		h.writeError(w, r, err)
		return false
	}
	if res == cache.Miss && h.admission != nil {
		// Manifests were stored: as after a push, the gate's index of
		// which manifests use which blobs is rebuilt, or the blobs of the
		// image just cached are withheld until it expires. Nobody pushed
		// them: no pusher is recorded.
		h.admission.RecordPush(rt.Name, rt.Digest, "")
	}
	w.Header().Set(cache.Header, string(res))
	return true
}

// serveCachedBlob streams a blob of a cache namespace that is still on its
// remote; false when the registry is to serve it from storage.
func (h *Handler) serveCachedBlob(w http.ResponseWriter, r *http.Request, rt Route) bool {
	if h.cache == nil || !h.cache.Owns(rt.Name) || !callerOf(r).Granted() {
		return false
	}
	return h.cache.ServeBlob(w, r, rt.Name, rt.Digest)
}
