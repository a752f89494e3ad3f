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
	// Vouch marks content and waits until it is not being deleted.
	Vouch(ctx context.Context, v gc.Vouch) error
	// Remember notes the blobs of a push step that succeeded.
	Remember(v gc.Vouch)
	// Settle forgets the blobs a stored manifest refers to.
	Settle(v gc.Vouch)
}

// Pulls records manifest pulls for retention (gc.Pulls).
type Pulls interface {
	// Due reports whether a pull now would be written, as far as the
	// recorder knows without reading storage.
	Due(repo string, d digest.Digest) bool
	Record(ctx context.Context, repo string, d digest.Digest) error
}

// vouch marks, while a collection runs, the content a request tells the
// client exists or finishes storing: a blob HEAD, a manifest GET or HEAD
// by digest, a cross-repository mount, a finished upload; then it waits
// until none of it is being deleted, so that the registry core answers
// with what is there. Content still tombstoned after the wait answers as
// absent (the client uploads it again), and its mount becomes an upload.
// It returns the request and the writer to go on with, the function that
// ends the request for the collector (call it when the request is done),
// and false when it answered. The writer remembers the vouch when the
// answer is a success. Requests that vouch for nothing cost nothing.
func (h *Handler) vouch(w http.ResponseWriter, r *http.Request, rt Route) (*http.Request, http.ResponseWriter, func(), bool) {
	v, ok := vouchOf(r, rt)
	if !ok {
		return r, w, func() {}, true
	}
	done := h.gc.Begin()
	r, ok = h.vouchFor(w, r, rt, v)
	if !ok || len(v.Blobs) == 0 {
		return r, w, done, ok // manifest reads are no push step
	}
	return r, &rememberWriter{statusWriter: statusWriter{ResponseWriter: w}, gc: h.gc, v: v.Vouch}, done, true
}

// rememberWriter remembers a vouch once the response is a success.
type rememberWriter struct {
	statusWriter
	gc Collection
	v  gc.Vouch
}

func (w *rememberWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 && code < 300 {
		w.gc.Remember(w.v)
	}
	w.statusWriter.WriteHeader(code)
}

func (w *rememberWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	return w.statusWriter.Write(p)
}

func (w *rememberWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// vouching is what one request vouches for, with the access it needs.
type vouching struct {
	gc.Vouch
	action string // pull or push
	mount  bool
}

// vouchOf returns what the request vouches for; false for a request that
// vouches for nothing.
func vouchOf(r *http.Request, rt Route) (vouching, bool) {
	switch {
	case r.Method == http.MethodHead && rt.Kind == KindBlob:
		return vouching{Vouch: gc.Vouch{Repository: rt.Name, Blobs: []digest.Digest{rt.Digest}}, action: "pull"}, true
	case (r.Method == http.MethodGet || r.Method == http.MethodHead) && rt.Kind == KindManifest && rt.Digest != "":
		return vouching{Vouch: gc.Vouch{Repository: rt.Name, Manifests: []digest.Digest{rt.Digest}}, action: "pull"}, true
	case rt.Kind != KindUpload || (r.Method != http.MethodPost && r.Method != http.MethodPut):
		// Nothing else vouches; the query is parsed only for the
		// requests below.
		return vouching{}, false
	}
	q := r.URL.Query()
	switch {
	case r.Method == http.MethodPost && rt.Kind == KindUpload && q.Get("mount") != "" && q.Get("from") != "":
		d, err := digest.Parse(q.Get("mount"))
		if err != nil {
			return vouching{}, false
		}
		return vouching{Vouch: gc.Vouch{Repository: q.Get("from"), Blobs: []digest.Digest{d}}, action: "pull", mount: true}, true
	case (r.Method == http.MethodPut || r.Method == http.MethodPost) && rt.Kind == KindUpload && q.Get("digest") != "":
		d, err := digest.Parse(q.Get("digest"))
		if err != nil {
			return vouching{}, false
		}
		return vouching{Vouch: gc.Vouch{Repository: rt.Name, Blobs: []digest.Digest{d}}, action: "push"}, true
	}
	return vouching{}, false
}

func (h *Handler) vouchFor(w http.ResponseWriter, r *http.Request, rt Route, v vouching) (*http.Request, bool) {
	if !h.gc.Active() {
		return r, true
	}
	if h.guard != nil {
		// Nothing is written for a caller the core will refuse.
		if c := api.Resolve(r, h.guard.Auth, rt.Name, v.action); !c.Granted() {
			return r, true
		}
	}
	err := h.gc.Vouch(r.Context(), v.Vouch)
	var te *gc.TombstonedError
	switch {
	case err == nil:
		return r, true
	case errors.As(err, &te) && v.mount:
		q := r.URL.Query()
		q.Del("mount")
		q.Del("from")
		r2 := r.Clone(r.Context())
		r2.URL.RawQuery = q.Encode()
		return r2, true
	case errors.As(err, &te) && rt.Kind == KindManifest:
		h.writeError(w, r, v2.ErrorCodeManifestUnknown.WithDetail(te.Digest))
	case errors.As(err, &te):
		h.writeError(w, r, v2.ErrorCodeBlobUnknown.WithDetail(te.Digest))
	default:
		h.writeGCError(w, r, rt, err)
	}
	return r, false
}

// vouchManifest marks, while a collection runs, a pushed manifest and what
// it refers to, and waits until none of it is being deleted: the registry
// core then checks the references against what is there.
// It returns the vouch, for putManifest to remember on success.
func (h *Handler) vouchManifest(w http.ResponseWriter, r *http.Request, rt Route, body []byte, dgst digest.Digest) (gc.Vouch, bool) {
	if h.gc == nil {
		return gc.Vouch{}, true
	}
	manifests, blobs := gc.References(body)
	manifests = append(manifests, dgst)
	if c := digest.FromBytes(body); c != dgst {
		manifests = append(manifests, c) // stored under its canonical digest
	}
	v := gc.Vouch{Repository: rt.Name, Manifests: manifests, Blobs: blobs}
	err := h.gc.Vouch(r.Context(), v)
	var te *gc.TombstonedError
	switch {
	case err == nil:
		return v, true
	case errors.As(err, &te):
		h.writeError(w, r, v2.ErrorCodeManifestBlobUnknown.WithDetail(te.Digest))
	default:
		h.writeGCError(w, r, rt, err)
	}
	return v, false
}

func (h *Handler) writeGCError(w http.ResponseWriter, r *http.Request, rt Route, err error) {
	if r.Context().Err() != nil {
		return // the client went away
	}
	h.log.ErrorContext(r.Context(), "gc marker not written", "repo", rt.Name, "err", err)
	h.writeError(w, r, api.Status(http.StatusServiceUnavailable, "UNAVAILABLE", "the storage backend did not answer; try again"))
}

// pullRecorders bounds the pull records written beside the requests that
// caused them; beyond it a request writes its own before it ends.
const pullRecorders = 32

// PullSlots bounds the pull records written in the background. Handlers
// built one after another from reloaded configurations share one, so that
// WaitPulls waits for the records of all of them.
type PullSlots chan struct{}

// NewPullSlots returns the slots of pullRecorders background writers.
func NewPullSlots() PullSlots { return make(PullSlots, pullRecorders) }

// Wait returns once the pull records being written in the background are
// written; call it after the server stopped serving.
func (s PullSlots) Wait() {
	for range cap(s) {
		s <- struct{}{}
	}
	for range cap(s) {
		<-s
	}
}

// Wait returns once the pull records this handler (and every handler that
// shares its slots) writes in the background are written.
func (h *Handler) Wait() { h.pullSlots.Wait() }

// recordPull notes a successful manifest GET for retention's pulledWithin
// (a storage write at most once an hour per manifest) once the response is
// written, in the background: the client does not wait for it, nor does
// the next request on its connection.
func (h *Handler) recordPull(r *http.Request, repo string, header http.Header) {
	if h.pulls == nil {
		return
	}
	d, err := parseLinkDigest(header.Get("Docker-Content-Digest"))
	if err != nil || !h.pulls.Due(repo, d) {
		return // recorded within the interval: no goroutine for it
	}
	ctx := context.WithoutCancel(r.Context())
	record := func() {
		if err := h.pulls.Record(ctx, repo, d); err != nil {
			h.log.WarnContext(ctx, "pull time not recorded", "repo", repo, "digest", d, "err", err)
		}
	}
	select {
	case h.pullSlots <- struct{}{}:
		go func() {
			defer func() { <-h.pullSlots }()
			record()
		}()
	default:
		record()
	}
}
