package replication

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	ggcrv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// authMode is how the test upstream authenticates clients.
type authMode int

const (
	authNone authMode = iota
	authBearer
	authBasic
)

// upstream is go-containerregistry's in-memory registry behind a handler
// that adds a token challenge and token endpoint (or Basic auth) and lets a
// test inject faults.
type upstream struct {
	t    *testing.T
	srv  *httptest.Server
	reg  http.Handler
	mode authMode

	mu         sync.Mutex
	user, pass string          // accepted credentials; "" user: anonymous tokens
	valid      map[string]bool // tokens the registry accepts
	expiresIn  int
	tokenUsers []string // basic user:pass seen by the token endpoint
	scopes     []string // scope params seen by the token endpoint
	fault      func(w http.ResponseWriter, r *http.Request) bool
	authSeen   []string // Authorization headers seen on /v2/ requests

	tokenRequests atomic.Int64
	requests      atomic.Int64 // requests to /v2/
}

// newUpstream starts an upstream; referrers enables the OCI referrers API.
func newUpstream(t *testing.T, mode authMode, referrers bool) *upstream {
	t.Helper()
	u := &upstream{
		t:         t,
		mode:      mode,
		valid:     map[string]bool{},
		expiresIn: 300,
		reg: registry.New(registry.Logger(log.New(io.Discard, "", 0)),
			registry.WithReferrersSupport(referrers)),
	}
	u.srv = httptest.NewServer(u)
	t.Cleanup(u.srv.Close)
	return u
}

// setCredentials sets the credentials the upstream accepts.
func (u *upstream) setCredentials(user, pass string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.user, u.pass = user, pass
}

// setFault installs f, which handles a /v2/ request (returning true) before
// authentication, or lets it through.
func (u *upstream) setFault(f func(w http.ResponseWriter, r *http.Request) bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.fault = f
}

// revokeTokens makes every token issued so far invalid.
func (u *upstream) revokeTokens() {
	u.mu.Lock()
	defer u.mu.Unlock()
	clear(u.valid)
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" {
		u.serveToken(w, r)
		return
	}
	u.requests.Add(1)
	u.mu.Lock()
	fault := u.fault
	u.authSeen = append(u.authSeen, r.Header.Get("Authorization"))
	u.mu.Unlock()
	if fault != nil && fault(w, r) {
		return
	}
	if !u.authorized(r) {
		repo := strings.TrimPrefix(r.URL.Path, "/v2/")
		for _, sep := range []string{"/manifests/", "/blobs/", "/referrers/"} {
			if i := strings.Index(repo, sep); i >= 0 {
				repo = repo[:i]
			}
		}
		switch u.mode {
		case authBearer:
			scope := ""
			if repo != "" {
				scope = fmt.Sprintf(`,scope="repository:%s:pull"`, repo)
			}
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="test"%s`, u.srv.URL, scope))
		case authBasic:
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		}
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return
	}
	u.reg.ServeHTTP(w, r)
}

func (u *upstream) authorized(r *http.Request) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch u.mode {
	case authBearer:
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		return ok && u.valid[tok]
	case authBasic:
		user, pass, ok := r.BasicAuth()
		return ok && user == u.user && pass == u.pass
	}
	return true
}

func (u *upstream) serveToken(w http.ResponseWriter, r *http.Request) {
	n := u.tokenRequests.Add(1)
	u.mu.Lock()
	defer u.mu.Unlock()
	user, pass, ok := r.BasicAuth()
	if ok {
		u.tokenUsers = append(u.tokenUsers, user+":"+pass)
	} else {
		u.tokenUsers = append(u.tokenUsers, "")
	}
	u.scopes = append(u.scopes, strings.Join(r.URL.Query()["scope"], " "))
	if u.user != "" && (!ok || user != u.user || pass != u.pass) {
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "incorrect username or password")
		return
	}
	tok := fmt.Sprintf("token-%d", n)
	u.valid[tok] = true
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "expires_in": u.expiresIn})
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": message}}})
}

// seed pushes img to repo:tag straight into the in-memory registry,
// bypassing authentication and faults.
func (u *upstream) seed(repo, tag string, img ggcrv1.Image) ggcrv1.Hash {
	u.t.Helper()
	direct := httptest.NewServer(u.reg)
	defer direct.Close()
	ref, err := name.ParseReference(strings.TrimPrefix(direct.URL, "http://") + "/" + repo + ":" + tag)
	if err != nil {
		u.t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		u.t.Fatalf("seed %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		u.t.Fatal(err)
	}
	return d
}

// ref names ref ("repo:tag") at the in-memory registry, for writes that
// bypass authentication and faults; the server lives until the test ends.
func (u *upstream) ref(ref string) name.Reference {
	u.t.Helper()
	direct := httptest.NewServer(u.reg)
	u.t.Cleanup(direct.Close)
	r, err := name.ParseReference(strings.TrimPrefix(direct.URL, "http://") + "/" + ref)
	if err != nil {
		u.t.Fatal(err)
	}
	return r
}

// putManifest puts a manifest straight into the in-memory registry.
func (u *upstream) putManifest(repo, ref, mediaType string, body []byte) {
	u.t.Helper()
	req := httptest.NewRequest(http.MethodPut, "/v2/"+repo+"/manifests/"+ref, bytes.NewReader(body))
	req.Header.Set("Content-Type", mediaType)
	rec := httptest.NewRecorder()
	u.reg.ServeHTTP(rec, req)
	if rec.Code != http.StatusCreated {
		u.t.Fatalf("put manifest %s:%s: %d %s", repo, ref, rec.Code, rec.Body)
	}
}

// randomImage returns a small random image.
func randomImage(t *testing.T) ggcrv1.Image {
	t.Helper()
	img, err := random.Image(256, 2)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 12, 4, 17, 2, 3, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// writeCredentials writes the credentials files and returns their paths.
func writeCredentials(t *testing.T, user, pass string) (userFile, passFile string) {
	t.Helper()
	dir := t.TempDir()
	userFile, passFile = filepath.Join(dir, "username"), filepath.Join(dir, "password")
	if err := os.WriteFile(userFile, []byte(user+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(passFile, []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return userFile, passFile
}

// newRemote returns a Remote for u with o's settings.
func newRemote(t *testing.T, u *upstream, o Options) *Remote {
	t.Helper()
	if o.Name == "" {
		o.Name = "upstream"
	}
	o.URL = u.srv.URL
	r, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return r
}
