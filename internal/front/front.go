// Package front is the handler in front of distribution for /v2/: it serves
// the routes distribution lacks (the referrers API, single-request blob
// uploads), adds the OCI-Subject header to manifest PUT responses, applies
// tag rules, admission and quarantine, refuses manifests of the types
// reserved for the registry's scanner, records events, and passes
// everything else on.
package front

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/auth/audit"
	"github.com/portcullis/portcullis/auth/token"
	"github.com/portcullis/portcullis/internal/api"
	"github.com/portcullis/portcullis/internal/cache"
	"github.com/portcullis/portcullis/internal/digests"
	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/internal/referrers"
	"github.com/portcullis/portcullis/internal/server"
	"github.com/portcullis/portcullis/scan/artifact"
)

// MaxManifestSize is the largest manifest body accepted (4 MiB), the limit
// the distribution spec lets registries set and distribution applies.
const MaxManifestSize = 4 << 20

// distributionRequestIDKey is the context key distribution reads to label its
// request log lines; carrying our request id under it makes both agree.
const distributionRequestIDKey = "instance.id"

// Handler routes /v2/ requests.
type Handler struct {
	registry  http.Handler
	referrers *referrers.Handler
	repos     repositories
	guard     *Guard
	admission Admission
	events    Events
	cache     *cache.Set
	gc        Collection
	pulls     Pulls
	hidden    []string
	manifests *manifestCache
	blobs     BlobFiles
	copyBufs  *sync.Pool // of *[blobCopySize]byte, for blobs not in files and upload bodies
	layout    layout
	pullSlots PullSlots
	barriers  Barriers
	offsets   UploadOffsets
	log       *slog.Logger
}

// Events records each successful manifest push, tag and delete durably
// (at once, or queued for a commit moments later), for the workers that act
// on them (the scanner, replication).
type Events interface {
	Append(ctx context.Context, e outbox.Event) (uint64, error)
}

// Options are the front handler's optional layers.
type Options struct {
	// Guard adds authorization, tag rules and audit (auth on).
	Guard *Guard
	// Admission adds trust policies and webhooks.
	Admission Admission
	// Events receives each successful manifest push, tag and delete.
	Events Events
	// Reserved are repositories the registry writes itself (its
	// vulnerability database): no client may write to them, whatever the
	// access rules say, and the catalog does not list them.
	Reserved []string
	// Cache serves the pull-through cache namespaces; nil: none.
	Cache *cache.Set
	// Collection marks what requests vouch for while garbage collection
	// runs; nil: no collections.
	Collection Collection
	// Pulls records manifest pulls; nil: not recorded.
	Pulls Pulls
	// PullSlots bounds the pull records written in the background; nil:
	// the handler's own.
	PullSlots PullSlots
	// Barriers, when set, is passed before a write request's success is
	// answered: it makes the request's storage writes durable with one
	// sync (filesystem), or fails when a write failed whose error the core
	// ignores (S3); nil: every write is durable when it returns.
	Barriers Barriers
	// UploadOffsets, when set, is told the offset a PATCH or PUT says its
	// upload holds, for storage that can resume an upload with fewer reads;
	// nil: not told.
	UploadOffsets UploadOffsets
	// Blobs opens blobs, for blob reads served by the handler (by
	// sendfile on the filesystem); nil: blob reads are left to
	// distribution (S3 that redirects to presigned URLs).
	Blobs BlobFiles
	// Log receives what cannot be reported to the client, such as an
	// event not recorded after a successful push; default none.
	Log *slog.Logger
}

// New returns the front handler over the registry core, the referrers API,
// and the repositories and the driver of the same storage.
func New(registry http.Handler, refs *referrers.Handler, repos repositories, driver storagedriver.StorageDriver, o Options) (*Handler, error) {
	if registry == nil || refs == nil || repos == nil || driver == nil {
		return nil, errors.New("front handler: registry, referrers, repositories and driver are required")
	}
	if g := o.Guard; g != nil && (g.Auth == nil || g.Tags == nil || g.Repos == nil) {
		return nil, errors.New("front handler: a guard needs an authorizer, a tag policy and repositories")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	manifests, err := newManifestCache()
	if err != nil {
		return nil, err
	}
	if o.PullSlots == nil {
		o.PullSlots = NewPullSlots()
	}
	return &Handler{registry: safeCore{next: registry, log: o.Log}, referrers: refs, repos: repos, guard: o.Guard, admission: o.Admission, hidden: o.Reserved,
		events: o.Events, cache: o.Cache, gc: o.Collection, pulls: o.Pulls, manifests: manifests, blobs: o.Blobs,
		copyBufs:  &sync.Pool{New: func() any { return new([blobCopySize]byte) }},
		layout:    layout{driver: driver},
		pullSlots: o.PullSlots, barriers: o.Barriers, offsets: o.UploadOffsets, log: o.Log}, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.barriers == nil || !writes(r.Method) {
		h.serve(w, r)
		return
	}
	ctx, wait := h.barriers.Barrier(r.Context())
	r = r.WithContext(ctx)
	bw := &barrierWriter{ResponseWriter: w, r: r, wait: wait, log: h.log}
	h.serve(bw, r)
	bw.finish()
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) {
	rt, err := ParseRoute(r.URL.Path)
	if errors.Is(err, ErrUnknownRoute) {
		h.writeError(w, r, api.Status(http.StatusNotFound, "UNSUPPORTED", "no such API endpoint: "+r.Method+" "+quoteShort(r.URL.Path)))
		return
	}
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if err := checkParams(r, rt); err != nil {
		h.writeError(w, r, err)
		return
	}
	var ok bool
	if r, rt, ok = h.routeCache(w, r, rt); !ok {
		return
	}
	if slices.Contains(h.hidden, rt.Name) && r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.writeError(w, r, errcode.ErrorCodeDenied.WithMessage(rt.Name+" is written only by the registry itself (registry vulndb import)"))
		return
	}
	if action := h.callerAction(r, rt); action != "" {
		var auth api.Authorizer
		if h.guard != nil {
			auth = h.guard.Auth
		}
		r = r.WithContext(api.WithCaller(r.Context(), api.Resolve(r, auth, rt.Name, action)))
	}
	if rt.Kind == KindReferrers {
		if c := callerOf(r); !c.Granted() {
			h.writeError(w, r, c.Err)
			return
		}
		if h.allowReferrers(w, r, rt) {
			if h.cache != nil {
				h.cache.Referrers(r.Context(), rt.Name, rt.Digest)
			}
			h.referrers.ServeHTTP(w, r, rt.Name, rt.Digest)
		}
		return
	}
	r = h.gateMount(r, rt)
	if h.gc != nil {
		var done func()
		r, w, done, ok = h.vouch(w, r, rt)
		defer done()
		if !ok {
			return
		}
	}
	//nolint:staticcheck // distribution looks this value up by its exact string key.
	ctx := context.WithValue(r.Context(), distributionRequestIDKey, server.RequestID(r.Context()))
	r = r.WithContext(ctx)
	if rt.Kind == KindUpload {
		r = withUploadBody(r, h.copyBufs)
		h.noteUploadOffset(r, rt)
	}
	switch {
	case r.Method == http.MethodPut && rt.Kind == KindManifest:
		h.putManifest(w, r, rt)
	case isMonolithicPost(r, rt):
		h.monolithicPost(w, r)
	case (r.Method == http.MethodGet || r.Method == http.MethodHead) && rt.Kind == KindManifest:
		if h.fillManifest(w, r, rt) && h.allowPull(w, r, rt) {
			sw := &statusWriter{ResponseWriter: w}
			if !h.serveManifest(sw, r, rt) {
				h.registry.ServeHTTP(sw, r)
			}
			if r.Method == http.MethodGet && sw.status == http.StatusOK {
				h.recordPull(r, rt.Name, sw.Header())
			}
		}
	case r.Method == http.MethodGet && rt.Kind == KindCatalog:
		h.serveCatalog(w, r)
	case (r.Method == http.MethodGet || r.Method == http.MethodHead) && rt.Kind == KindBlob:
		if h.allowBlob(w, r, rt) && !h.serveCachedBlob(w, r, rt) && !h.serveBlob(w, r, rt) {
			h.registry.ServeHTTP(w, r)
		}
	case r.Method == http.MethodDelete && rt.Kind == KindManifest:
		if h.guard != nil {
			if err := h.guard.checkTags(r, rt, nil); err != nil {
				h.writeError(w, r, err)
				return
			}
		}
		sw := &statusWriter{ResponseWriter: w}
		h.registry.ServeHTTP(sw, r)
		if h.guard != nil {
			h.guard.auditWrite(r, rt, sw.status, rt.Digest.String())
		}
		if sw.status == http.StatusAccepted {
			h.record(r, outbox.Event{Kind: outbox.KindDelete, Repository: rt.Name, Digest: rt.Digest, Tag: rt.Tag})
		}
	default:
		h.registry.ServeHTTP(w, r)
	}
}

// callerAction returns the access on the route's repository this handler
// checks itself, "" for none (distribution authorizes those requests
// alone): pull for the referrers API and, under admission, for a manifest
// GET or HEAD; push for a manifest PUT; delete for a manifest DELETE.
func (h *Handler) callerAction(r *http.Request, rt Route) string {
	switch {
	case rt.Kind == KindReferrers:
		return "pull"
	case (rt.Kind == KindManifest || rt.Kind == KindBlob) && (r.Method == http.MethodGet || r.Method == http.MethodHead) && h.cache.Owns(rt.Name):
		// Nothing is fetched from a remote for a caller who may not pull.
		return "pull"
	case rt.Kind == KindBlob && r.Method == http.MethodGet && h.admission != nil && h.admission.Active(rt.Name):
		return "pull"
	case rt.Kind != KindManifest:
		return ""
	case r.Method == http.MethodPut:
		return "push"
	case r.Method == http.MethodDelete:
		return "delete"
	case (r.Method == http.MethodGet || r.Method == http.MethodHead) && h.admission != nil && h.admission.Active(rt.Name):
		return "pull"
	}
	return ""
}

// callerOf returns the request's caller as ServeHTTP resolved it; the zero
// Caller (anonymous, granted) when it resolved none.
func callerOf(r *http.Request) api.Caller {
	c, _ := api.CallerFrom(r.Context())
	return c
}

func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	api.WriteError(w, r, h.log, err)
}

// statusWriter remembers the status of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// putManifest reads the manifest (bounded), passes it on, and on success
// names its subject in the OCI-Subject header.
func (h *Handler) putManifest(w http.ResponseWriter, r *http.Request, rt Route) {
	if c := callerOf(r); h.guard != nil && !c.Granted() {
		// Authorized before the body is read: a client that may not push
		// gets its challenge without sending (or trickling) 4 MiB first.
		w.Header().Set("Connection", "close")
		h.writeError(w, r, c.Err)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxManifestSize+1))
	if err != nil {
		h.writeError(w, r, api.Status(http.StatusBadRequest, "MANIFEST_INVALID", "could not read the manifest body: the client sent it too slowly or broke off"))
		return
	}
	if len(body) > MaxManifestSize {
		// 413, as the distribution spec recommends, with the spec's code.
		w.Header().Set("Connection", "close")
		h.writeError(w, r, api.Status(http.StatusRequestEntityTooLarge, "MANIFEST_INVALID", "manifest is larger than the 4 MiB limit"))
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	if requested := rt.Digest; requested != "" && !digests.Canonical(requested) {
		// The registry core stores manifests by sha256: hand it the
		// canonical digest and keep the client's for the alias and the
		// response.
		if requested.Algorithm().FromBytes(body) != requested {
			h.writeError(w, r, errcode.ErrorCodeDigestInvalid.WithMessage("manifest body does not match digest "+requested.String()))
			return
		}
		canonical := digest.FromBytes(body)
		r.URL.Path = "/v2/" + rt.Name + "/manifests/" + canonical.String()
		r.URL.RawPath = ""
		r = r.WithContext(digests.WithRequested(r.Context(), requested))
		w = &replaceDigestWriter{ResponseWriter: w, old: canonical.String(), new: requested.String()}
	}
	subject := referrers.SubjectOf(body)
	if subject != "" {
		w = &subjectWriter{ResponseWriter: w, subject: subject.String()}
	}
	if h.guard != nil {
		if err := h.guard.checkTags(r, rt, body); err != nil {
			h.writeError(w, r, err)
			return
		}
	}
	if !h.allowType(w, r, rt, body) {
		return
	}
	dgst := rt.Digest
	if dgst == "" {
		dgst = digest.FromBytes(body)
	}
	if !h.admitTag(w, r, rt, body, dgst) {
		return
	}
	if h.gc != nil {
		done := h.gc.Begin()
		defer done()
	}
	vouched, ok := h.vouchManifest(w, r, rt, body, dgst)
	if !ok {
		return
	}
	sw := &statusWriter{ResponseWriter: w}
	h.registry.ServeHTTP(sw, r)
	if sw.status == http.StatusCreated {
		if h.gc != nil {
			h.gc.Settle(vouched)
		}
		if h.guard != nil {
			h.guard.auditWrite(r, rt, sw.status, dgst.String())
		}
		if h.admission != nil {
			h.admission.RecordPush(rt.Name, dgst, callerOf(r).Login)
		}
		kind := outbox.KindPush
		if rt.Tag != "" {
			kind = outbox.KindTag
		}
		mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		h.record(r, outbox.Event{Kind: kind, Repository: rt.Name, Digest: dgst, Tag: rt.Tag, MediaType: mt,
			Subject: subject})
	}
}

// allowType refuses a manifest whose artifactType, config media type or an
// annotation key is reserved for the registry's scanner: the scanner
// trusts the reports and inventories it finds in storage, so only it may
// write them, and it writes to storage directly, not through this handler.
// A client that may not push at all is left to distribution's challenge. It
// answers the request and returns false when the manifest is refused.
func (h *Handler) allowType(w http.ResponseWriter, r *http.Request, rt Route, body []byte) bool {
	t := artifact.ReservedIn(body)
	if t == "" {
		return true
	}
	c := callerOf(r)
	if h.guard != nil && !c.Granted() {
		return true
	}
	login := c.Login
	msg := t + " is reserved for the registry's scanner, which stores it itself"
	h.log.WarnContext(r.Context(), "manifest with a reserved type or annotation refused", "repo", rt.Name, "ref", rt.Tag, "reserved", t, "login", login)
	if h.guard != nil && h.guard.Audit != nil {
		h.guard.Audit.RecordWrite(r.Context(), audit.Write{
			Subject: login, Addr: token.RemoteHost(r), Action: "push", Repository: rt.Name, Tag: rt.Tag,
			Digest: rt.Digest.String(), Err: errors.New(msg), RequestID: server.RequestID(r.Context()),
		})
	}
	h.writeError(w, r, errcode.ErrorCodeDenied.WithMessage(msg))
	return false
}

// record appends a successful write to the event outbox (in the
// registry, queued for a background commit: outbox.Recorder). A failure is
// logged, and each consumer's reconcile pass repairs what was missed.
func (h *Handler) record(r *http.Request, e outbox.Event) {
	if h.events == nil {
		return
	}
	e.Time = time.Now()
	e.Pusher = callerOf(r).Login
	if _, err := h.events.Append(context.WithoutCancel(r.Context()), e); err != nil {
		h.log.ErrorContext(r.Context(), "record event", "kind", e.Kind, "repo", e.Repository, "digest", e.Digest, "ref", e.Tag, "err", err)
	}
}

// subjectWriter adds OCI-Subject to a successful manifest PUT response.
type subjectWriter struct {
	http.ResponseWriter
	subject string
}

func (w *subjectWriter) WriteHeader(code int) {
	if code == http.StatusCreated {
		w.Header().Set("OCI-Subject", w.subject)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *subjectWriter) Write(p []byte) (int, error) { return w.ResponseWriter.Write(p) }

func (w *subjectWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// replaceDigestWriter names the client's digest instead of the canonical one
// in the Location and Docker-Content-Digest headers of a manifest PUT.
type replaceDigestWriter struct {
	http.ResponseWriter
	old, new string
}

func (w *replaceDigestWriter) WriteHeader(code int) {
	h := w.Header()
	for _, k := range []string{"Location", "Docker-Content-Digest"} {
		if v := h.Get(k); v != "" {
			h.Set(k, strings.ReplaceAll(v, w.old, w.new))
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *replaceDigestWriter) Write(p []byte) (int, error) { return w.ResponseWriter.Write(p) }

func (w *replaceDigestWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
