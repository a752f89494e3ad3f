package token

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/auth"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"golang.org/x/crypto/bcrypt"

	pauth "github.com/portcullis/portcullis/auth"
	"github.com/portcullis/portcullis/auth/audit"
	"github.com/portcullis/portcullis/auth/ratelimit"
	"github.com/portcullis/portcullis/config"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// lockedBuffer collects audit lines from concurrent handlers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) events(t testing.TB) []audit.Event {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []audit.Event
	dec := json.NewDecoder(bytes.NewReader(b.buf.Bytes()))
	for dec.More() {
		var e audit.Event
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("audit line: %v", err)
		}
		out = append(out, e)
	}
	return out
}

const (
	testIssuer  = "portcullis-test"
	testService = "registry.test"
	addrHeader  = "X-Test-Client-Addr" // the test's ClientAddr reads it
)

var testPasswords = map[string]string{"alice": "alice-password", "bob": "bob-password", "root": "root-password"}

func testAuthConfig() config.Auth {
	a := config.Auth{
		Enabled:       true,
		AnonymousPull: false,
		Groups: []config.AuthGroup{
			{Name: "devs", Members: []string{"alice", "bob"}},
			{Name: "admins", Members: []string{"root"}},
		},
		Catalog: []string{"group:admins"},
		Admins:  []string{"group:admins", "anonymous"},
		Rules: []config.AccessRule{
			{Name: "devs-team", Subjects: []string{"group:devs"}, Repositories: []string{"team/**"}, Actions: []string{"pull", "push"}},
			{Name: "admins", Subjects: []string{"group:admins"}, Repositories: []string{"**"}, Actions: []string{"*"}},
			{Name: "public", Subjects: []string{"anonymous", "authenticated"}, Repositories: []string{"public/**"}, Actions: []string{"pull"}},
			{Name: "bob-readonly", Effect: "deny", Subjects: []string{"user:bob"}, Repositories: []string{"team/**"}, Actions: []string{"push", "delete"}},
		},
	}
	a.Provision()
	return a
}

type env struct {
	t      testing.TB
	clock  *clock
	keys   *KeySet
	policy *pauth.Policy
	robots *Robots
	tokens *Refreshes
	svc    *Service
	ctl    *AccessController
	srv    *httptest.Server
	audit  *lockedBuffer
}

type envOptions struct {
	keys    *KeySet
	cfg     *config.Auth
	limiter ratelimit.Options
	// cacheSize is the controller's CacheSize.
	cacheSize int
	// audit configures the audit log; its clock is the env's.
	audit audit.Options
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	e := &env{t: t, clock: &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}, audit: &lockedBuffer{}}
	cfg := testAuthConfig()
	if o.cfg != nil {
		cfg = *o.cfg
	}
	var err error
	if e.policy, err = pauth.NewPolicy(cfg); err != nil {
		t.Fatal(err)
	}
	e.keys = o.keys
	if e.keys == nil {
		if e.keys, err = NewKeySet(newKey(t)); err != nil {
			t.Fatal(err)
		}
	}
	hashes := map[string][]byte{}
	for name, pw := range testPasswords {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		hashes[name] = h
	}
	users, err := NewUsers(hashes)
	if err != nil {
		t.Fatal(err)
	}
	store := inmemory.New()
	if e.robots, err = NewRobots(store, RobotsOptions{Now: e.clock.Now}); err != nil {
		t.Fatal(err)
	}
	if e.tokens, err = NewRefreshes(store, RefreshesOptions{Now: e.clock.Now}); err != nil {
		t.Fatal(err)
	}
	o.audit.Now = e.clock.Now
	log, err := audit.New(e.audit, o.audit)
	if err != nil {
		t.Fatal(err)
	}
	o.limiter.Now = e.clock.Now
	limiter, err := ratelimit.New(o.limiter)
	if err != nil {
		t.Fatal(err)
	}
	clientAddr := func(r *http.Request) string {
		if a := r.Header.Get(addrHeader); a != "" {
			return a
		}
		return RemoteHost(r)
	}
	if e.svc, err = NewService(e.keys, e.policy, users, Options{
		Issuer: testIssuer, Service: testService, Robots: e.robots, Refreshes: e.tokens, Limiter: limiter,
		Audit: log, ClientAddr: clientAddr, Now: e.clock.Now,
	}); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/token", e.svc)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	if e.ctl, err = NewAccessController(e.keys, ControllerOptions{
		Issuer: testIssuer, Service: testService, Realm: e.srv.URL + "/token",
		Now: e.clock.Now, Audit: log, ClientAddr: clientAddr, CacheSize: o.cacheSize,
	}); err != nil {
		t.Fatal(err)
	}
	mux.Handle("/v2/", registryStub{e.ctl})
	return e
}

// registryStub asks the access controller exactly what distribution's
// handlers ask for each route, and answers as they do.
type registryStub struct{ ac auth.AccessController }

func (h registryStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/v2/")
	var access []auth.Access
	add := func(name string, actions ...string) {
		for _, a := range actions {
			access = append(access, auth.Access{Resource: auth.Resource{Type: "repository", Name: name}, Action: a})
		}
	}
	switch {
	case p == "":
	case p == "_catalog":
		access = append(access, auth.Access{Resource: auth.Resource{Type: "registry", Name: "catalog"}, Action: "*"})
	default:
		i := strings.LastIndex(p, "/manifests/")
		if i < 0 {
			i = strings.LastIndex(p, "/blobs/")
		}
		if i < 0 {
			http.NotFound(w, r)
			return
		}
		name := p[:i]
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			add(name, "pull")
		case http.MethodPut, http.MethodPost, http.MethodPatch:
			add(name, "pull", "push")
		case http.MethodDelete:
			add(name, "delete")
		}
	}
	g, err := h.ac.Authorized(r, access...)
	if err != nil {
		if ch, ok := err.(auth.Challenge); ok {
			ch.SetHeaders(r, w)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	_, _ = io.WriteString(w, g.User.Name)
}

type tokenReply struct {
	tokenResponse
	Errors []struct{ Code, Message string } `json:"errors"`
	Error  string                           `json:"error"`
}

// getToken runs the GET flow; user "" means anonymous.
func (e *env) getToken(user, pass, addr string, query url.Values) (int, tokenReply) {
	e.t.Helper()
	if query == nil {
		query = url.Values{}
	}
	query.Set("service", testService)
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+"/token?"+query.Encode(), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	return e.doToken(req, addr)
}

func (e *env) postToken(form url.Values, addr string) (int, tokenReply) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/token", strings.NewReader(form.Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return e.doToken(req, addr)
}

func (e *env) doToken(req *http.Request, addr string) (int, tokenReply) {
	e.t.Helper()
	if addr != "" {
		req.Header.Set(addrHeader, addr)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out tokenReply
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		e.t.Fatalf("token response: %v", err)
	}
	return resp.StatusCode, out
}

func scopes(s ...string) url.Values { return url.Values{"scope": s} }

// registry calls the stub registry with a bearer token; it returns the
// status and the WWW-Authenticate header.
func (e *env) registry(method, path, token string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
}

// mustToken logs in (GET) and returns an access token.
func (e *env) mustToken(user string, scope ...string) string {
	e.t.Helper()
	status, r := e.getToken(user, testPasswords[user], "", scopes(scope...))
	if status != http.StatusOK {
		e.t.Fatalf("login %s: status %d %+v", user, status, r)
	}
	return r.Token
}

// claimsOf verifies a token with the env's controller.
func (e *env) claimsOf(tok string) *Claims {
	e.t.Helper()
	c, err := e.ctl.Verify(tok)
	if err != nil {
		e.t.Fatalf("verify: %v", err)
	}
	return c
}

// len returns the bytes of audit lines written so far.
func (b *lockedBuffer) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}
