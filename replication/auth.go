package replication

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Authentication schemes a remote asked for.
const (
	schemeNone   = ""
	schemeBasic  = "basic"
	schemeBearer = "bearer"
)

// tokenEarly is how long before its expiry a cached token stops being used.
const tokenEarly = 30 * time.Second

// defaultTokenLifetime applies when the token service gives no expires_in.
const defaultTokenLifetime = 60 * time.Second

// maxTokenBody bounds a token service's answer.
const maxTokenBody = 1 << 20

// authState is what a Remote learnt about the remote's authentication: the
// scheme it wants, the token service, and the tokens it issued.
type authState struct {
	mu      sync.Mutex
	scheme  string
	realm   string
	service string
	tokens  map[string]cachedToken // by scope
	flights map[string]*tokenFlight
	// writes is set once a call needed a push token: the remote is a
	// destination, and a pull token is then asked for with push too (see
	// tokenKey).
	writes bool
}

type cachedToken struct {
	token   string
	expires time.Time
	gen     uint64 // credentials generation it was obtained with
}

// tokenFlight is one token request that concurrent callers wait on.
type tokenFlight struct {
	done  chan struct{}
	token string
	err   error
}

func newAuthState() *authState {
	return &authState{tokens: map[string]cachedToken{}, flights: map[string]*tokenFlight{}}
}

// bearerChallenge is the token service a Bearer challenge names.
type bearerChallenge struct {
	realm, service, scope string
}

// sendAuthed sends c with the credentials the remote is known to want, and
// on a 401 runs the authentication flow once: a token from the challenge's
// realm (Bearer) or the configured credentials (Basic), then sends c again.
// A 401 that cannot be answered is returned as it came.
func (r *Remote) sendAuthed(ctx context.Context, c call) (*http.Response, error) {
	user, pass, gen, err := r.credentials()
	if err != nil {
		return nil, err
	}
	hasCreds := r.creds != nil

	authorization, key, err := r.upfront(ctx, c, user, pass, gen, hasCreds)
	if err != nil {
		return nil, err
	}
	resp, err := r.roundTrip(ctx, c, authorization)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}

	challenges := parseChallenges(resp.Header.Values("WWW-Authenticate"))
	if bc, ok := findBearer(challenges); ok {
		drain(resp.Body)
		r.rememberBearer(bc)
		if token, ok := strings.CutPrefix(authorization, "Bearer "); ok {
			r.dropToken(key, token)
		}
		scope := bc.scope
		if scope == "" {
			scope = c.scope
		}
		token, err := r.token(ctx, c.what, bc.realm, bc.service, scope, c.scope, user, pass, gen, hasCreds)
		if err != nil {
			return nil, err
		}
		return r.roundTrip(ctx, c, "Bearer "+token)
	}
	if hasBasic(challenges) && hasCreds && !strings.HasPrefix(authorization, "Basic ") {
		drain(resp.Body)
		r.rememberScheme(schemeBasic)
		return r.roundTrip(ctx, c, basicAuth(user, pass))
	}
	return resp, nil
}

// credentials returns the configured credentials, or empty ones.
func (r *Remote) credentials() (user, pass string, gen uint64, err error) {
	if r.creds == nil {
		return "", "", 0, nil
	}
	user, pass, gen, err = r.creds.get()
	if err != nil {
		return "", "", 0, fmt.Errorf("remote %s: %w", r.name, err)
	}
	return user, pass, gen, nil
}

// upfront returns the Authorization header to send before any challenge:
// basic credentials or a token, when the remote asked for them before;
// and the scope the token was asked for.
func (r *Remote) upfront(ctx context.Context, c call, user, pass string, gen uint64, hasCreds bool) (string, string, error) {
	a := r.auth
	a.mu.Lock()
	scheme, realm, service := a.scheme, a.realm, a.service
	key := a.tokenKey(c.scope, hasCreds)
	cached, ok := a.tokens[key]
	a.mu.Unlock()
	switch scheme {
	case schemeBasic:
		if hasCreds {
			return basicAuth(user, pass), key, nil
		}
	case schemeBearer:
		if ok && cached.gen == gen && r.now().Before(cached.expires.Add(-tokenEarly)) {
			return "Bearer " + cached.token, key, nil
		}
		token, err := r.token(ctx, c.what, realm, service, key, key, user, pass, gen, hasCreds)
		if err != nil && key != c.scope && !errors.Is(err, ErrUnavailable) && ctx.Err() == nil {
			// A token service that refuses the push scope outright
			// (rather than granting what the account may) still gives
			// the pull token asked for.
			key = c.scope
			token, err = r.token(ctx, c.what, realm, service, key, key, user, pass, gen, hasCreds)
		}
		if err != nil {
			return "", key, err
		}
		return "Bearer " + token, key, nil
	}
	return "", key, nil
}

// tokenKey is the scope to ask a token for scope with (a.mu held). On a
// remote this client writes to, with credentials, a repository's pull
// scope becomes its push scope: the copy that checks what the destination
// has is about to write there, and one token then serves both (a token
// service grants the actions the account has, so a read-only repository
// still gets its pull token). Each token costs the remote a password check.
func (a *authState) tokenKey(scope string, hasCreds bool) string {
	if strings.HasSuffix(scope, ":pull,push") {
		a.writes = true
	}
	if !a.writes || !hasCreds || strings.Contains(scope, " ") {
		return scope
	}
	if repo, ok := strings.CutSuffix(scope, ":pull"); ok && strings.HasPrefix(repo, "repository:") {
		return repo + ":pull,push"
	}
	return scope
}

func (r *Remote) rememberScheme(scheme string) {
	r.auth.mu.Lock()
	r.auth.scheme = scheme
	r.auth.mu.Unlock()
}

func (r *Remote) rememberBearer(bc bearerChallenge) {
	a := r.auth
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.realm != bc.realm || a.service != bc.service {
		clear(a.tokens)
	}
	a.scheme, a.realm, a.service = schemeBearer, bc.realm, bc.service
}

// dropToken forgets the token cached for key if it is still token.
func (r *Remote) dropToken(key, token string) {
	a := r.auth
	a.mu.Lock()
	defer a.mu.Unlock()
	if t, ok := a.tokens[key]; ok && t.token == token {
		delete(a.tokens, key)
	}
}

// token returns a token for scope from the realm's token service, cached
// under key; what names the call that needs it, for errors. A valid
// cached token is returned as is; otherwise concurrent callers for the
// same key share one request, which runs detached from their contexts
// (each caller still stops waiting when its own ends).
func (r *Remote) token(ctx context.Context, what, realm, service, scope, key, user, pass string, gen uint64, hasCreds bool) (string, error) {
	a := r.auth
	a.mu.Lock()
	if t, ok := a.tokens[key]; ok && t.gen == gen && r.now().Before(t.expires.Add(-tokenEarly)) {
		a.mu.Unlock()
		return t.token, nil
	}
	f, ok := a.flights[key]
	if !ok {
		f = &tokenFlight{done: make(chan struct{})}
		a.flights[key] = f
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.tokenTimeout)
		go func() {
			defer cancel()
			token, lifetime, err := r.fetchToken(fctx, realm, service, scope, user, pass, hasCreds)
			if err != nil && !errors.Is(err, ErrUnavailable) && errors.Is(fctx.Err(), context.DeadlineExceeded) {
				err = fmt.Errorf("remote %s: get token: no answer within %s: %w", r.name, r.tokenTimeout, ErrUnavailable)
			}
			a.mu.Lock()
			defer a.mu.Unlock()
			if err == nil {
				a.tokens[key] = cachedToken{token: token, expires: r.now().Add(lifetime), gen: gen}
			}
			delete(a.flights, key)
			f.token, f.err = token, err
			close(f.done)
		}()
	}
	a.mu.Unlock()
	select {
	case <-f.done:
		if f.err != nil {
			return "", r.inContext(what, f.err)
		}
		return f.token, nil
	case <-ctx.Done():
		return "", fmt.Errorf("remote %s: %s: get token: %w", r.name, what, ctx.Err())
	}
}

// fetchToken asks the token service at realm for a pull token, with basic
// authentication when credentials are configured.
func (r *Remote) fetchToken(ctx context.Context, realm, service, scope, user, pass string, hasCreds bool) (string, time.Duration, error) {
	what := "get token"
	if scope != "" {
		what += " for " + scope
	}
	u, err := url.Parse(realm)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", 0, fmt.Errorf("remote %s: %s: realm %q is not an http(s) URL: %w", r.name, what, clean(realm), ErrUnauthorized)
	}
	// The realm gets the remote's credentials: not in clear when the
	// remote is https, and not to the registry's own machine or the cloud
	// metadata service.
	if base, _ := url.Parse(r.base); base != nil {
		if err := r.checkTarget(base.Scheme, u); err != nil {
			return "", 0, fmt.Errorf("remote %s: %s: realm %q refused (%v): %w", r.name, what, clean(realm), err, ErrUnauthorized)
		}
	}
	q := u.Query()
	if service != "" {
		q.Set("service", service)
	}
	for s := range strings.FieldsSeq(scope) {
		q.Add("scope", s)
	}
	u.RawQuery = q.Encode()
	c := call{op: "token", what: what, method: http.MethodGet, url: u.String(), accept: "application/json"}
	authorization := ""
	if hasCreds {
		authorization = basicAuth(user, pass)
	}
	resp, err := r.roundTrip(ctx, c, authorization)
	if err != nil {
		return "", 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", 0, r.statusError(what, resp)
	}
	defer resp.Body.Close()
	var v struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxTokenBody)).Decode(&v); err != nil {
		return "", 0, fmt.Errorf("remote %s: %s: decode answer: %w: %w", r.name, what, ErrUnavailable, err)
	}
	token := v.Token
	if token == "" {
		token = v.AccessToken
	}
	if token == "" {
		return "", 0, fmt.Errorf("remote %s: %s: answer has no token: %w", r.name, what, ErrUnauthorized)
	}
	lifetime := defaultTokenLifetime
	if v.ExpiresIn > 0 {
		lifetime = time.Duration(min(v.ExpiresIn, 1<<31)) * time.Second
	}
	r.log.DebugContext(ctx, "token obtained", "scope", scope, "expires_in", lifetime)
	return token, lifetime, nil
}

func findBearer(cs []challenge) (bearerChallenge, bool) {
	for _, c := range cs {
		if c.Scheme == schemeBearer && c.Params["realm"] != "" {
			return bearerChallenge{realm: c.Params["realm"], service: c.Params["service"], scope: c.Params["scope"]}, true
		}
	}
	return bearerChallenge{}, false
}

func hasBasic(cs []challenge) bool {
	for _, c := range cs {
		if c.Scheme == schemeBasic {
			return true
		}
	}
	return false
}

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// contextError is an error of a shared step (a token request) as seen by
// one of the calls that waited on it: its message says which call.
type contextError struct {
	msg string
	err error
}

func (e *contextError) Error() string { return e.msg }

func (e *contextError) Unwrap() error { return e.err }

// inContext prefixes err, an error of this remote, with what was asked.
func (r *Remote) inContext(what string, err error) error {
	prefix := "remote " + r.name + ": "
	return &contextError{msg: prefix + what + ": " + strings.TrimPrefix(err.Error(), prefix), err: err}
}
