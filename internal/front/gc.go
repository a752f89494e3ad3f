package front

import (
	"context"
	"errors"
	"net/http"

	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/internal/api"
	"github.com/portcullis/portcullis/internal/gc"
)

// Collection is garbage collection's side of the requests that tell a
// client content exists or make it exist (gc.Marks).
type Collection interface {
	// Begin registers a request; the returned function ends it.
	Begin() func()
	// Active reports whether requests must vouch now.
	Active() bool
	// Vouch marks content and checks it is not being deleted.
	Vouch(ctx context.Context, v gc.Vouch) error
}

// Pulls records manifest pulls for retention (gc.Pulls).
type Pulls interface {
	Record(ctx context.Context, repo string, d digest.Digest) error
}

// vouch marks, while a collection runs, the content a request tells the
// client exists or finishes storing: a blob HEAD, a manifest GET or HEAD
// by digest, a cross-repository mount, a finished upload. Content being
// deleted answers as absent (the client uploads it again); a mount of it
// becomes an ordinary upload; an upload of it waits until the deletion
// is over. It returns the request to go on with, and false when it
// answered.
func (h *Handler) vouch(w http.ResponseWriter, r *http.Request, rt Route) (*http.Request, bool) {
	if h.gc == nil || !h.gc.Active() {
		return r, true
	}
	q := r.URL.Query()
	var v gc.Vouch
	action := "pull"
	switch {
	case r.Method == http.MethodHead && rt.Kind == KindBlob:
		v = gc.Vouch{Repository: rt.Name, Blobs: []digest.Digest{rt.Digest}}
	case (r.Method == http.MethodGet || r.Method == http.MethodHead) && rt.Kind == KindManifest && rt.Digest != "":
		v = gc.Vouch{Repository: rt.Name, Manifests: []digest.Digest{rt.Digest}}
	case r.Method == http.MethodPost && rt.Kind == KindUpload && q.Get("mount") != "" && q.Get("from") != "":
		d, err := digest.Parse(q.Get("mount"))
		if err != nil {
			return r, true
		}
		v = gc.Vouch{Repository: q.Get("from"), Blobs: []digest.Digest{d}}
	case (r.Method == http.MethodPut || r.Method == http.MethodPost) && rt.Kind == KindUpload && q.Get("digest") != "":
		d, err := digest.Parse(q.Get("digest"))
		if err != nil {
			return r, true
		}
		v = gc.Vouch{Repository: rt.Name, Blobs: []digest.Digest{d}, Wait: true}
		action = "push"
	default:
		return r, true
	}
	if h.guard != nil {
		// Nothing is written for a caller the core will refuse.
		if c := api.Resolve(r, h.guard.Auth, rt.Name, action); !c.Granted() {
			return r, true
		}
	}
	err := h.gc.Vouch(r.Context(), v)
	var te *gc.TombstonedError
	switch {
	case err == nil:
		return r, true
	case errors.As(err, &te) && rt.Kind == KindUpload && !v.Wait:
		// A mount of a blob being deleted: start an ordinary upload.
		q.Del("mount")
		q.Del("from")
		r2 := r.Clone(r.Context())
		r2.URL.RawQuery = q.Encode()
		return r2, true
	case errors.As(err, &te) && rt.Kind == KindBlob:
		h.writeError(w, r, v2.ErrorCodeBlobUnknown.WithDetail(te.Digest))
	case errors.As(err, &te):
		h.writeError(w, r, v2.ErrorCodeManifestUnknown.WithDetail(te.Digest))
	default:
		h.log.ErrorContext(r.Context(), "gc marker not written", "repo", rt.Name, "err", err)
		h.writeError(w, r, api.Status(http.StatusServiceUnavailable, "UNAVAILABLE", "the storage backend did not answer; try again"))
	}
	return r, false
}

// vouchManifest marks, while a collection runs, a pushed manifest and what
// it refers to. A reference being deleted is refused as unknown, so the
// client uploads it again; the manifest itself, if a collection is
// deleting the same digest, waits for the deletion to end.
func (h *Handler) vouchManifest(w http.ResponseWriter, r *http.Request, rt Route, body []byte, dgst digest.Digest) bool {
	if h.gc == nil || !h.gc.Active() {
		return true
	}
	manifests, blobs := gc.References(body)
	err := h.gc.Vouch(r.Context(), gc.Vouch{Repository: rt.Name, Manifests: manifests, Blobs: blobs})
	if err == nil {
		own := []digest.Digest{dgst}
		if c := digest.FromBytes(body); c != dgst {
			own = append(own, c) // stored under its canonical digest
		}
		err = h.gc.Vouch(r.Context(), gc.Vouch{Repository: rt.Name, Manifests: own, Wait: true})
	}
	var te *gc.TombstonedError
	switch {
	case err == nil:
		return true
	case errors.As(err, &te):
		h.writeError(w, r, v2.ErrorCodeManifestBlobUnknown.WithDetail(te.Digest))
	default:
		h.log.ErrorContext(r.Context(), "gc marker not written", "repo", rt.Name, "err", err)
		h.writeError(w, r, api.Status(http.StatusServiceUnavailable, "UNAVAILABLE", "the storage backend did not answer; try again"))
	}
	return false
}

// recordPull notes a successful manifest GET for retention's pulledWithin.
func (h *Handler) recordPull(r *http.Request, repo string, header http.Header) {
	if h.pulls == nil {
		return
	}
	d, err := digest.Parse(header.Get("Docker-Content-Digest"))
	if err != nil {
		return
	}
	ctx := context.WithoutCancel(r.Context())
	go func() {
		if err := h.pulls.Record(ctx, repo, d); err != nil {
			h.log.WarnContext(ctx, "pull time not recorded", "repo", repo, "digest", d, "err", err)
		}
	}()
}
