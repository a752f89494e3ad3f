package admission

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// VerdictPath is the prefix of the verdict API:
// GET /api/v1/repositories/<name>/manifests/<digest>/verdict[?wait=30s].
const VerdictPath = "/api/v1/repositories/"

// maxWait bounds ?wait.
const maxWait = 5 * time.Minute

// ParseAPIPath parses /api/v1/repositories/<name>/manifests/<digest>/<what>
// and returns its parts, or ok false.
func ParseAPIPath(p string) (repo string, d digest.Digest, what string, ok bool) {
	rest, ok := strings.CutPrefix(p, VerdictPath)
	if !ok {
		return "", "", "", false
	}
	i := strings.LastIndex(rest, "/")
	if i < 0 {
		return "", "", "", false
	}
	rest, what = rest[:i], rest[i+1:]
	repo, d, ok = parseManifestPath(rest)
	return repo, d, what, ok
}

func parseManifestPath(rest string) (repo string, d digest.Digest, ok bool) {
	i := strings.LastIndex(rest, "/manifests/")
	if i <= 0 {
		return "", "", false
	}
	repo = rest[:i]
	if _, err := reference.WithName(repo); err != nil {
		return "", "", false
	}
	d, err := digest.Parse(rest[i+len("/manifests/"):])
	if err != nil {
		return "", "", false
	}
	return repo, d, true
}

// ServeVerdict answers the verdict API for repo@d: the current verdict, or
// with ?wait=DURATION the verdict once the digest is trusted or the wait is
// over, whichever comes first. The caller has checked the client may pull.
func (g *Gate) ServeVerdict(w http.ResponseWriter, r *http.Request, repo string, d digest.Digest) {
	if g.mode(repo) == "" {
		_ = errcode.ServeJSON(w, errcode.ErrorCodeNameUnknown.WithMessage("no trust policy applies to "+repo))
		return
	}
	var wait time.Duration
	if s := r.URL.Query().Get("wait"); s != "" {
		var err error
		if wait, err = time.ParseDuration(s); err != nil || wait < 0 {
			_ = errcode.ServeJSON(w, errcode.ErrorCodeUnsupported.WithMessage("wait must be a duration like 30s"))
			return
		}
		wait = min(wait, maxWait)
	}
	ctx := r.Context()
	deadline := time.Now().Add(wait)
	for {
		v, err := g.verify(ctx, "api", repo, d)
		if err != nil {
			_ = errcode.ServeJSON(w, errcode.ErrorCodeUnavailable.WithMessage("signature verification failed; retry later"))
			return
		}
		if v.Trusted || time.Now().After(deadline) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(v)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(500*time.Millisecond, time.Until(deadline))):
		}
	}
}
