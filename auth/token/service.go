package token

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	pauth "github.com/portcullis/portcullis/auth"
	"github.com/portcullis/portcullis/auth/audit"
	"github.com/portcullis/portcullis/auth/ratelimit"
)

// Options configures a Service. Issuer and Service are required; the zero
// value of every other field means its default.
type Options struct {
	// Issuer is the iss claim of every token.
	Issuer string
	// Service is the aud claim, and the only service clients may ask for.
	Service string
	// Lifetime of access tokens; default 5 minutes.
	Lifetime time.Duration
	// RefreshLifetime of refresh tokens; default 7 days. Negative: no
	// refresh tokens are issued.
	RefreshLifetime time.Duration
	// Leeway tolerated on refresh tokens' exp, nbf and iat; default 30s.
	Leeway time.Duration
	// Robots authenticates robot+NAME logins; nil means no robot accounts.
	Robots *Robots
	// Refreshes records issued refresh tokens, each checked on use so it
	// can be revoked; nil means no refresh tokens are issued or accepted.
	Refreshes *Refreshes
	// Limiter rate-limits failed logins; default ratelimit.New with its
	// defaults and this clock.
	Limiter *ratelimit.Limiter
	// Audit records every authentication and decision; nil records nothing.
	Audit *audit.Log
	// ClientAddr extracts the client address; default the host of
	// r.RemoteAddr. Behind a proxy, pass one that trusts its header.
	ClientAddr func(*http.Request) string
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Service is the token endpoint: GET with Basic credentials (or none, for
// an anonymous token) and POST with grant_type password or refresh_token,
// as docker login, containerd, crane and oras use it. It is an
// http.Handler, independent of the registry, and safe for concurrent use.
type Service struct {
	keys    *KeySet
	policy  *pauth.Policy
	users   *Users
	opts    Options
	refresh *jwt.Parser
}

// NewService returns a token service signing with keys, authenticating
// against users (and opts.Robots) and granting what policy allows. It
// returns an error when a dependency or a required option is missing.
func NewService(keys *KeySet, policy *pauth.Policy, users *Users, opts Options) (*Service, error) {
	if keys == nil || policy == nil || users == nil {
		return nil, errors.New("token service: keys, policy and users are required")
	}
	if opts.Issuer == "" || opts.Service == "" {
		return nil, errors.New("token service: issuer and service are required")
	}
	if opts.Lifetime == 0 {
		opts.Lifetime = 5 * time.Minute
	}
	if opts.RefreshLifetime == 0 {
		opts.RefreshLifetime = 7 * 24 * time.Hour
	}
	if opts.Leeway == 0 {
		opts.Leeway = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ClientAddr == nil {
		opts.ClientAddr = RemoteHost
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Limiter == nil {
		l, err := ratelimit.New(ratelimit.Options{Now: opts.Now})
		if err != nil {
			return nil, fmt.Errorf("token service: %w", err)
		}
		opts.Limiter = l
	}
	s := &Service{keys: keys, policy: policy, users: users, opts: opts}
	s.refresh = jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg(), jwt.SigningMethodRS256.Alg()}),
		jwt.WithIssuer(opts.Issuer),
		jwt.WithAudience(opts.Service),
		jwt.WithLeeway(opts.Leeway),
		jwt.WithTimeFunc(opts.Now),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	)
	return s, nil
}

const (
	// maxScopes bounds the scopes of one token request.
	maxScopes = 64
	// maxCredential bounds a username and a password: longer ones fail as
	// wrong credentials without a bcrypt comparison.
	maxCredential = 1 << 10
	// maxAuditedDecisions bounds the decisions one token request writes to
	// the audit log; one more line counts the rest.
	maxAuditedDecisions = 16
)

// tokenResponse is the JSON answer of the specification; token and
// access_token carry the same JWT for both kinds of client.
type tokenResponse struct {
	Token        string `json:"token"`
	AccessToken  string `json:"access_token"`
	ExpiresIn    int    `json:"expires_in"`
	IssuedAt     string `json:"issued_at"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

// httpError is a client-safe failure: status, OAuth2 error code, message.
type httpError struct {
	status     int
	code       string
	msg        string
	retryAfter time.Duration
}

func (e *httpError) Error() string { return e.msg }

var (
	errUnauthorized = &httpError{status: http.StatusUnauthorized, code: "invalid_grant", msg: "invalid credentials"}
	errInternal     = &httpError{status: http.StatusInternalServerError, code: "server_error", msg: "internal error"}
)

func badRequest(code, msg string) *httpError {
	return &httpError{status: http.StatusBadRequest, code: code, msg: msg}
}

// ServeHTTP answers a token request.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var herr *httpError
	switch r.Method {
	case http.MethodGet:
		herr = s.serveGet(w, r)
	case http.MethodPost:
		herr = s.servePost(w, r)
	default:
		w.Header().Set("Allow", "GET, POST")
		herr = &httpError{status: http.StatusMethodNotAllowed, code: "invalid_request", msg: "method not allowed"}
	}
	if herr != nil {
		writeError(w, herr)
	}
}

// request is one token request after parsing.
type request struct {
	subject pauth.Subject
	cred    string // credential fingerprint, for refresh tokens
	scopes  []pauth.Scope
	offline bool
	oauth   bool
	addr    string
}

func (s *Service) serveGet(w http.ResponseWriter, r *http.Request) *httpError {
	ctx := r.Context()
	q := r.URL.Query()
	req := request{addr: s.opts.ClientAddr(r)}
	if herr := s.checkService(q.Get("service")); herr != nil {
		return herr
	}
	var herr *httpError
	if req.scopes, herr = parseScopes(q["scope"]); herr != nil {
		return herr
	}
	if r.Header.Get("Authorization") != "" {
		user, pass, ok := r.BasicAuth()
		if !ok {
			s.audit(ctx, audit.Event{Kind: audit.KindAuthentication, Addr: req.addr, Action: "login", Result: audit.ResultFailure, Reason: "malformed authorization header"})
			w.Header().Set("WWW-Authenticate", `Basic realm="token"`)
			return errUnauthorized
		}
		if acct := q.Get("account"); acct != "" && acct != user {
			return badRequest("invalid_request", "account does not match the credentials")
		}
		if req.subject, req.cred, herr = s.login(ctx, user, pass, req.addr); herr != nil {
			return herr
		}
		req.offline = q.Get("offline_token") == "true"
	}
	return s.issue(ctx, w, req)
}

func (s *Service) servePost(w http.ResponseWriter, r *http.Request) *httpError {
	ctx := r.Context()
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return badRequest("invalid_request", "malformed form")
	}
	f := r.PostForm
	req := request{addr: s.opts.ClientAddr(r), oauth: true}
	if herr := s.checkService(f.Get("service")); herr != nil {
		return herr
	}
	var herr *httpError
	if req.scopes, herr = parseScopes(f["scope"]); herr != nil {
		return herr
	}
	switch f.Get("grant_type") {
	case "password":
		user, pass := f.Get("username"), f.Get("password")
		if user == "" || pass == "" {
			return badRequest("invalid_request", "username and password are required")
		}
		if req.subject, req.cred, herr = s.login(ctx, user, pass, req.addr); herr != nil {
			return herr
		}
		req.offline = f.Get("access_type") == "offline"
	case "refresh_token":
		raw := f.Get("refresh_token")
		if raw == "" {
			return badRequest("invalid_request", "refresh_token is required")
		}
		if req.subject, req.cred, herr = s.useRefresh(ctx, raw, req.addr); herr != nil {
			return herr
		}
	case "":
		return badRequest("invalid_request", "grant_type is required")
	default:
		return badRequest("unsupported_grant_type", "grant_type must be password or refresh_token")
	}
	return s.issue(ctx, w, req)
}

func (s *Service) checkService(svc string) *httpError {
	if svc != "" && svc != s.opts.Service {
		return badRequest("invalid_request", "unknown service")
	}
	return nil
}

// parseScopes parses scope parameters, each holding one or more
// space-separated scopes.
func parseScopes(values []string) ([]pauth.Scope, *httpError) {
	var out []pauth.Scope
	for _, v := range values {
		for _, f := range strings.Fields(v) {
			if len(out) == maxScopes {
				return nil, badRequest("invalid_scope", fmt.Sprintf("more than %d scopes", maxScopes))
			}
			sc, err := pauth.ParseScope(f)
			if err != nil {
				return nil, badRequest("invalid_scope", "malformed scope")
			}
			out = append(out, sc)
		}
	}
	return out, nil
}

// Login authenticates user (a user, or robot+NAME) with pass for a request
// that is not a token request (basic credentials on /metrics), as the token
// endpoint does: under the login rate limit of addr, and audited. It returns
// the subject, or an error wrapping ErrBadCredentials when the credentials
// are wrong or the login is rate limited, which are not told apart.
func (s *Service) Login(ctx context.Context, user, pass, addr string) (pauth.Subject, error) {
	subject, _, herr := s.login(ctx, user, pass, addr)
	if herr != nil {
		return pauth.Subject{}, fmt.Errorf("%w: %s", ErrBadCredentials, herr.msg)
	}
	return subject, nil
}

// login authenticates a user or robot+NAME, under the rate limit.
func (s *Service) login(ctx context.Context, user, pass, addr string) (pauth.Subject, string, *httpError) {
	ev := audit.Event{Kind: audit.KindAuthentication, Subject: attempted(user), Addr: addr, Action: "login"}
	if len(user) > maxCredential || len(pass) > maxCredential {
		// Counted against the address only: an absurd name is no user.
		if wait, ok := s.opts.Limiter.Allow("", addr); !ok {
			ev.Result, ev.Reason = audit.ResultLocked, "too many failed logins"
			s.audit(ctx, ev)
			return pauth.Subject{}, "", &httpError{status: http.StatusTooManyRequests, code: "slow_down", msg: "too many failed logins, try again later", retryAfter: wait}
		}
		s.opts.Limiter.Failure("", addr)
		ev.Result, ev.Reason = audit.ResultFailure, "credentials too long"
		s.audit(ctx, ev)
		return pauth.Subject{}, "", errUnauthorized
	}
	if wait, ok := s.opts.Limiter.Allow(user, addr); !ok {
		ev.Result, ev.Reason = audit.ResultLocked, "too many failed logins"
		s.audit(ctx, ev)
		return pauth.Subject{}, "", &httpError{status: http.StatusTooManyRequests, code: "slow_down", msg: "too many failed logins, try again later", retryAfter: wait}
	}
	var (
		subject pauth.Subject
		cred    string
		err     error
	)
	if name, ok := strings.CutPrefix(user, pauth.RobotPrefix); ok {
		subject, cred, err = s.robotLogin(ctx, name, pass)
	} else {
		cred, err = s.users.Authenticate(user, pass)
		subject = s.policy.User(user)
	}
	switch {
	case errors.Is(err, ErrBadCredentials):
		s.opts.Limiter.Failure(user, addr)
		ev.Result, ev.Reason = audit.ResultFailure, "invalid credentials"
		s.audit(ctx, ev)
		return pauth.Subject{}, "", errUnauthorized
	case err != nil:
		s.opts.Logger.ErrorContext(ctx, "authenticate", "err", err)
		return pauth.Subject{}, "", errInternal
	}
	s.opts.Limiter.Success(user, addr)
	ev.Subject, ev.Result = subject.String(), audit.ResultSuccess
	s.audit(ctx, ev)
	return subject, cred, nil
}

func (s *Service) robotLogin(ctx context.Context, name, secret string) (pauth.Subject, string, error) {
	if s.opts.Robots == nil {
		return pauth.Subject{}, "", ErrBadCredentials
	}
	r, err := s.opts.Robots.Authenticate(ctx, name, secret)
	if err != nil {
		return pauth.Subject{}, "", err
	}
	subject, err := r.Subject()
	if err != nil {
		return pauth.Subject{}, "", err
	}
	return subject, r.credential(), nil
}

// useRefresh checks a refresh token and that its credential is unchanged.
func (s *Service) useRefresh(ctx context.Context, raw, addr string) (pauth.Subject, string, *httpError) {
	ev := audit.Event{Kind: audit.KindAuthentication, Addr: addr, Action: "refresh"}
	if wait, ok := s.opts.Limiter.Allow("", addr); !ok {
		ev.Result, ev.Reason = audit.ResultLocked, "too many failed logins"
		s.audit(ctx, ev)
		return pauth.Subject{}, "", &httpError{status: http.StatusTooManyRequests, code: "slow_down", msg: "too many failed logins, try again later", retryAfter: wait}
	}
	subject, cred, reason, err := s.checkRefresh(ctx, raw)
	if err != nil {
		s.opts.Logger.ErrorContext(ctx, "check refresh token", "err", err)
		return pauth.Subject{}, "", errInternal
	}
	if reason != "" {
		s.opts.Limiter.Failure("", addr)
		ev.Result, ev.Reason = audit.ResultFailure, reason
		s.audit(ctx, ev)
		return pauth.Subject{}, "", errUnauthorized
	}
	ev.Subject, ev.Result = subject.String(), audit.ResultSuccess
	s.audit(ctx, ev)
	return subject, cred, nil
}

// checkRefresh returns the subject of a valid refresh token, or a reason
// it is not valid; err is an internal failure.
func (s *Service) checkRefresh(ctx context.Context, raw string) (pauth.Subject, string, string, error) {
	claims, err := verify(s.refresh, s.keys, raw)
	if err != nil {
		s.opts.Logger.DebugContext(ctx, "refresh token rejected", "err", err)
		return pauth.Subject{}, "", "invalid refresh token", nil
	}
	if claims.Use != useRefresh {
		return pauth.Subject{}, "", "not a refresh token", nil
	}
	if s.opts.Refreshes == nil {
		return pauth.Subject{}, "", "refresh tokens are disabled", nil
	}
	rec, err := s.opts.Refreshes.Get(ctx, claims.ID)
	if errors.Is(err, ErrRefreshNotFound) || (err == nil && rec.Subject != claims.Subject) {
		return pauth.Subject{}, "", "refresh token revoked", nil
	}
	if err != nil {
		return pauth.Subject{}, "", "", err
	}
	var (
		subject pauth.Subject
		current string
	)
	switch name, robot := strings.CutPrefix(claims.Subject, pauth.RobotPrefix); {
	case claims.Subject == "":
		return pauth.Subject{}, "", "refresh token without subject", nil
	case robot:
		if s.opts.Robots == nil {
			return pauth.Subject{}, "", "robot accounts are disabled", nil
		}
		r, err := s.opts.Robots.Get(ctx, name)
		if errors.Is(err, ErrRobotNotFound) {
			return pauth.Subject{}, "", "robot revoked", nil
		}
		if err != nil {
			return pauth.Subject{}, "", "", err
		}
		if r.expired(s.opts.Now()) {
			return pauth.Subject{}, "", "robot expired", nil
		}
		if subject, err = r.Subject(); err != nil {
			return pauth.Subject{}, "", "", err
		}
		current = r.credential()
	default:
		c, ok := s.users.credential(claims.Subject)
		if !ok {
			return pauth.Subject{}, "", "user removed", nil
		}
		subject, current = s.policy.User(claims.Subject), c
	}
	if subtle.ConstantTimeCompare([]byte(current), []byte(claims.Credential)) != 1 {
		return pauth.Subject{}, "", "credential changed", nil
	}
	return subject, current, "", nil
}

// issue decides each scope, signs the token and writes the answer.
func (s *Service) issue(ctx context.Context, w http.ResponseWriter, req request) *httpError {
	access := s.grant(ctx, req)
	now := s.opts.Now()
	claims := s.claims(req.subject, now, now.Add(s.opts.Lifetime))
	claims.Access = access
	tok, err := s.keys.sign(claims)
	if err != nil {
		s.opts.Logger.ErrorContext(ctx, "issue token", "err", err)
		return errInternal
	}
	resp := tokenResponse{
		Token: tok, AccessToken: tok,
		ExpiresIn: int(math.Round(s.opts.Lifetime.Seconds())),
		IssuedAt:  now.UTC().Format(time.RFC3339),
	}
	if req.oauth {
		resp.Scope = formatAccess(access)
	}
	if req.offline && req.subject.Kind != pauth.Anonymous && s.opts.RefreshLifetime > 0 && s.opts.Refreshes != nil {
		exp := now.Add(s.opts.RefreshLifetime)
		if req.subject.Kind == pauth.Robot && s.opts.Robots != nil {
			if r, err := s.opts.Robots.Get(ctx, req.subject.Name); err == nil && !r.ExpiresAt.IsZero() && r.ExpiresAt.Before(exp) {
				exp = r.ExpiresAt
			}
		}
		rc := s.claims(req.subject, now, exp)
		rc.Use, rc.Credential, rc.Groups = useRefresh, req.cred, nil
		rec := RefreshRecord{ID: rc.ID, Subject: rc.Subject, IssuedAt: now.UTC(), ExpiresAt: exp.UTC()}
		if err := s.opts.Refreshes.record(ctx, rec); err != nil {
			s.opts.Logger.ErrorContext(ctx, "issue refresh token", "err", err)
			return errInternal
		}
		if resp.RefreshToken, err = s.keys.sign(rc); err != nil {
			s.opts.Logger.ErrorContext(ctx, "issue refresh token", "err", err)
			return errInternal
		}
	}
	body, err := json.Marshal(resp)
	if err != nil {
		return errInternal
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	return nil
}

func (s *Service) claims(subject pauth.Subject, now, exp time.Time) *Claims {
	return &Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    s.opts.Issuer,
			Subject:   subject.Login(),
			Audience:  jwt.ClaimStrings{s.opts.Service},
			ExpiresAt: jwt.NewNumericDate(exp),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        newID(),
		},
		Access: []ResourceActions{},
		Kind:   subject.Kind.String(),
		Groups: subject.Groups,
	}
}

// grant asks the policy about every requested scope and audits each
// decision. The result never holds more than was requested.
func (s *Service) grant(ctx context.Context, req request) []ResourceActions {
	type res struct{ typ, class, name string }
	var order []res
	want := map[res][]string{}
	for _, sc := range req.scopes {
		r := res{sc.Type, sc.Class, sc.Name}
		if _, ok := want[r]; !ok {
			order = append(order, r)
		}
		want[r] = append(want[r], sc.Actions...)
	}
	access := []ResourceActions{}
	audited, skipped := 0, 0
	record := func(e audit.Event) {
		if audited == maxAuditedDecisions {
			skipped++
			return
		}
		audited++
		s.audit(ctx, e)
	}
	defer func() {
		if skipped > 0 {
			s.audit(ctx, audit.Event{
				Kind: audit.KindDecision, Subject: req.subject.String(), Addr: req.addr, Action: "token",
				Result: audit.ResultSuppressed, Reason: fmt.Sprintf("%d more decisions not audited", skipped), Suppressed: skipped,
			})
		}
	}()
	for _, r := range order {
		ev := audit.Event{Kind: audit.KindDecision, Subject: req.subject.String(), Addr: req.addr, Action: "token"}
		switch {
		case r.typ == "repository":
			var requested pauth.Actions
			for _, a := range want[r] {
				if act, err := pauth.ParseActions(a); err == nil {
					requested |= act
				}
			}
			granted, d := s.policy.Grant(req.subject, r.name, requested)
			for _, ru := range d.Rulings {
				e := ev
				e.Action, e.Repository, e.Rule, e.Reason = ru.Action.String(), r.name, ru.Rule, ru.Reason
				e.Result = result(ru.Allowed)
				record(e)
			}
			if granted != 0 {
				access = append(access, ResourceActions{Type: r.typ, Class: r.class, Name: r.name, Actions: granted.Names()})
			}
		case r.typ == "registry" && contains(want[r], "*"):
			var ru pauth.Ruling
			switch r.name {
			case "catalog":
				ru = s.policy.Catalog(req.subject)
			case "admin":
				ru = s.policy.Admin(req.subject)
			default:
				continue
			}
			ev.Action, ev.Repository, ev.Rule, ev.Reason, ev.Result = r.name, "", ru.Rule, ru.Reason, result(ru.Allowed)
			record(ev)
			if ru.Allowed {
				access = append(access, ResourceActions{Type: "registry", Name: r.name, Actions: []string{"*"}})
			}
		}
	}
	return access
}

func result(allowed bool) string {
	if allowed {
		return audit.ResultAllowed
	}
	return audit.ResultDenied
}

func formatAccess(access []ResourceActions) string {
	parts := make([]string, 0, len(access))
	for _, a := range access {
		parts = append(parts, a.Type+":"+a.Name+":"+strings.Join(a.Actions, ","))
	}
	return strings.Join(parts, " ")
}

func (s *Service) audit(ctx context.Context, e audit.Event) { s.opts.Audit.Record(ctx, e) }

// attempted names the subject a login tried to be, for audit lines.
func attempted(user string) string {
	if name, ok := strings.CutPrefix(user, pauth.RobotPrefix); ok {
		return "robot:" + name
	}
	return "user:" + user
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// writeError writes a JSON error both docker (errors[]) and OAuth2 clients
// (error, error_description) understand. It never includes client input.
func writeError(w http.ResponseWriter, e *httpError) {
	code := "UNKNOWN"
	switch e.status {
	case http.StatusUnauthorized:
		code = "UNAUTHORIZED"
		if w.Header().Get("WWW-Authenticate") == "" {
			w.Header().Set("WWW-Authenticate", `Basic realm="token"`)
		}
	case http.StatusTooManyRequests:
		code = "TOOMANYREQUESTS"
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(e.retryAfter.Seconds()))))
	case http.StatusBadRequest, http.StatusMethodNotAllowed:
		code = "UNSUPPORTED"
	}
	body, _ := json.Marshal(map[string]any{
		"errors":            []map[string]string{{"code": code, "message": e.msg}},
		"error":             e.code,
		"error_description": e.msg,
	})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(e.status)
	_, _ = w.Write(body)
}
