package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/auth/audit"
	"github.com/portcullis/portcullis/trust"
)

// maxWait bounds ?wait.
const maxWait = 5 * time.Minute

// pollInterval is how often ?wait asks for the verdict again.
const pollInterval = 500 * time.Millisecond

// Verdicts decides images' trust verdicts.
type Verdicts interface {
	// Applies reports whether a trust or scan policy applies to repo.
	Applies(repo string) bool
	// Verdict returns repo@d's current verdict; an error when signatures
	// could not be verified.
	Verdict(ctx context.Context, repo string, d digest.Digest) (trust.Verdict, error)
}

// Documents reads the documents the scanner stores for images.
type Documents interface {
	// Document returns the newest document of the kind (WhatVulnerabilities
	// or WhatSBOM) for repo@d, as JSON. Its errors are errcode errors, an
	// error with a ScanFailure() string method when the image's scan failed,
	// or an internal error.
	Document(ctx context.Context, repo string, d digest.Digest, kind string) ([]byte, error)
}

// Manifests tells which manifests a repository has.
type Manifests interface {
	// Exists reports whether repo has the manifest d; the error is a
	// failure to read storage.
	Exists(ctx context.Context, repo string, d digest.Digest) (bool, error)
}

// failedScan is the error of Documents for an image whose scan failed.
type failedScan interface {
	error
	ScanFailure() string
}

// Options are the API's parts; each may be nil.
type Options struct {
	// Auth authorizes callers; nil when auth is off.
	Auth Authorizer
	// Verdicts serves .../verdict; nil when no policy is configured.
	Verdicts Verdicts
	// Documents serves .../vulnerabilities and .../sbom; nil when
	// scanning is not running.
	Documents Documents
	// Withheld returns the refusal of a read of repo@d by the caller login
	// when the content is quarantined from that caller (its SBOM is withheld
	// with it), nil otherwise; nil withholds nothing.
	Withheld func(ctx context.Context, repo string, d digest.Digest, login string) error
	// Manifests tells .../vulnerabilities and .../sbom a digest the
	// repository does not have from one not scanned yet; nil: not told.
	Manifests Manifests
	// Caches serves /api/v1/caches; nil when no cache is configured.
	Caches Caches
	// Collections serves /api/v1/gc/runs; nil: no runs.
	Collections Collections
	// Replication serves /api/v1/replication; nil: no rules.
	Replication Replication
	// Stored lists repositories and tags for the management API; nil:
	// none.
	Stored Stored
	// Scans summarizes scans in tag listings; nil: not running.
	Scans Scans
	// Robots serves /api/v1/robots; nil when robot accounts are off.
	Robots Robots
	// Audit receives the management API's robot creations and
	// revocations; nil: none.
	Audit *audit.Log
	// Log receives internal errors; default none.
	Log *slog.Logger
	// Now is the clock of ?wait; default time.Now.
	Now func() time.Time
}

// Handler serves /api/v1/.
type Handler struct {
	auth        Authorizer
	verdicts    Verdicts
	docs        Documents
	withheld    func(ctx context.Context, repo string, d digest.Digest, login string) error
	manifests   Manifests
	caches      Caches
	gc          Collections
	replication Replication
	stored      Stored
	scans       Scans
	robots      Robots
	audit       *audit.Log
	log         *slog.Logger
	now         func() time.Time
}

// New returns the API handler.
func New(o Options) (*Handler, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Handler{auth: o.Auth, verdicts: o.Verdicts, docs: o.Documents, withheld: o.Withheld, manifests: o.Manifests,
		caches: o.Caches, gc: o.Collections, replication: o.Replication, stored: o.Stored, scans: o.Scans, robots: o.Robots,
		audit: o.Audit, log: o.Log, now: o.Now}, nil
}

// ServeHTTP serves, to clients that may pull the repository,
// GET /api/v1/repositories/<name>/manifests/<digest>/verdict[?wait=30s]
// (trust), .../vulnerabilities (the newest scan report) and .../sbom.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == cachesPath && r.Method == http.MethodGet {
		h.serveCaches(w, r)
		return
	}
	if r.URL.Path == gcRunsPath && r.Method == http.MethodGet {
		h.serveGCRuns(w, r)
		return
	}
	if r.URL.Path == replicationPath || strings.HasPrefix(r.URL.Path, replicationPath+"/") {
		h.serveReplication(w, r)
		return
	}
	if r.URL.Path == robotsPath || strings.HasPrefix(r.URL.Path, robotsPath+"/") {
		h.serveRobots(w, r)
		return
	}
	if r.URL.Path == strings.TrimSuffix(repositoriesPath, "/") && r.Method == http.MethodGet {
		h.serveRepositories(w, r)
		return
	}
	if r.URL.Path == allTagsPath && r.Method == http.MethodGet {
		h.serveAllTags(w, r)
		return
	}
	if repo, ok := parseTagsPath(r.URL.Path); ok && r.Method == http.MethodGet {
		h.serveTags(w, r, repo)
		return
	}
	repo, d, what, ok := ParsePath(r.URL.Path)
	if !ok || r.Method != http.MethodGet || (what != WhatVerdict && what != WhatVulnerabilities && what != WhatSBOM) {
		h.writeError(w, r, Status(http.StatusNotFound, "UNSUPPORTED", "no such API endpoint: "+r.Method+" "+quoteShort(r.URL.Path)))
		return
	}
	c := Resolve(r, h.auth, repo, "pull")
	if !c.Granted() {
		h.writeError(w, r, c.Err)
		return
	}
	r = r.WithContext(WithCaller(r.Context(), c))
	if what == WhatSBOM && h.withheld != nil {
		if err := h.withheld(r.Context(), repo, d, c.Login); err != nil {
			h.writeError(w, r, err)
			return
		}
	}
	switch {
	case what == WhatVerdict && h.verdicts != nil:
		h.serveVerdict(w, r, repo, d)
	case what == WhatVerdict:
		h.writeError(w, r, Status(http.StatusNotFound, "NAME_UNKNOWN", "no trust policy applies to "+repo))
	case h.docs != nil:
		h.serveDocument(w, r, repo, d, what)
	default:
		h.writeError(w, r, Status(http.StatusNotFound, "UNSUPPORTED", "scanning is not running"))
	}
}

func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	WriteError(w, r, h.log, err)
}

// serveVerdict answers with repo@d's current verdict, or with
// ?wait=DURATION the verdict once the digest is trusted or the wait is
// over, whichever comes first; 404 MANIFEST_UNKNOWN when repo has no
// manifest d.
func (h *Handler) serveVerdict(w http.ResponseWriter, r *http.Request, repo string, d digest.Digest) {
	if !h.verdicts.Applies(repo) {
		h.writeError(w, r, errcode.ErrorCodeNameUnknown.WithMessage("no trust policy applies to "+repo))
		return
	}
	var wait time.Duration
	if s := r.URL.Query().Get("wait"); s != "" {
		var err error
		if wait, err = time.ParseDuration(s); err != nil || wait < 0 {
			h.writeError(w, r, errcode.ErrorCodeUnsupported.WithMessage("wait must be a duration like 30s"))
			return
		}
		wait = min(wait, maxWait)
	}
	ctx := r.Context()
	deadline := h.now().Add(wait)
	for {
		v, err := h.verdicts.Verdict(ctx, repo, d)
		if errors.Is(err, trust.ErrNotFound) {
			h.writeError(w, r, manifestUnknown(repo, d))
			return
		}
		if err != nil {
			h.writeError(w, r, errcode.ErrorCodeUnavailable.WithMessage("signature verification failed; retry later"))
			return
		}
		if v.Trusted || h.now().After(deadline) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(v)
			return
		}
		t := time.NewTimer(min(pollInterval, deadline.Sub(h.now())))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// serveDocument answers with repo@d's newest document of the kind, 422
// with the reason when the image's scan failed, or 404 MANIFEST_UNKNOWN
// when repo has no manifest d.
func (h *Handler) serveDocument(w http.ResponseWriter, r *http.Request, repo string, d digest.Digest, what string) {
	if h.manifests != nil {
		ok, err := h.manifests.Exists(r.Context(), repo, d)
		if err != nil {
			h.writeError(w, r, Internal("could not read the repository", err))
			return
		}
		if !ok {
			h.writeError(w, r, manifestUnknown(repo, d))
			return
		}
	}
	doc, err := h.docs.Document(r.Context(), repo, d, what)
	var failed failedScan
	switch {
	case errors.As(err, &failed):
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnprocessableEntity)
		_ = json.NewEncoder(w).Encode(map[string]string{"verdict": "scan failed", "reason": failed.ScanFailure()})
	case err != nil && isOCIError(err):
		h.writeError(w, r, err)
	case err != nil:
		h.writeError(w, r, Internal("could not read the image's "+what, err))
	default:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	}
}

// manifestUnknown is the answer for a digest repo does not have: 404, so
// that a client does not retry.
func manifestUnknown(repo string, d digest.Digest) error {
	return errcode.ErrorCodeManifestUnknown.WithMessage(fmt.Sprintf("manifest %s is not in %s", d, repo))
}

// isOCIError reports an error WriteError answers with its own code.
func isOCIError(err error) bool {
	var (
		se *StatusError
		ee errcode.Error
		ec errcode.ErrorCode
		es errcode.Errors
	)
	return errors.As(err, &se) || errors.As(err, &ee) || errors.As(err, &ec) || errors.As(err, &es)
}

func quoteShort(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return fmt.Sprintf("%q", s)
}
