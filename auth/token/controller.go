package token

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/distribution/distribution/v3/registry/auth"
	"github.com/golang-jwt/jwt/v5"

	pauth "github.com/portcullis/portcullis/auth"
	"github.com/portcullis/portcullis/auth/audit"
)

// ControllerOptions configures an AccessController. Issuer, Service and
// Realm are required; the zero value of every other field means its default.
type ControllerOptions struct {
	// Issuer is the iss claim a token must carry.
	Issuer string
	// Service is the aud claim a token must carry and the service named in
	// challenges.
	Service string
	// Realm is the absolute URL of the token service, named in challenges.
	Realm string
	// Leeway tolerated on exp, nbf and iat; default 30s.
	Leeway time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Audit records rejected tokens and insufficient scopes; nil records
	// nothing. Granted requests are not audited here (they are too many):
	// the token service audits every grant when it issues the token.
	Audit *audit.Log
	// ClientAddr extracts the client address for audit lines; default the
	// host of r.RemoteAddr.
	ClientAddr func(*http.Request) string
	// Logger receives debug lines for rejected tokens; default slog.Default().
	Logger *slog.Logger
	// CacheSize is how many verified tokens are remembered so that repeated
	// requests with one token skip the signature check; default 4096,
	// negative disables the cache.
	CacheSize int
}

// AccessController verifies our bearer tokens. It implements
// distribution's auth.AccessController and is safe for concurrent use.
type AccessController struct {
	keys   *KeySet
	opts   ControllerOptions
	parser *jwt.Parser
	cache  *verifiedCache
}

var _ auth.AccessController = (*AccessController)(nil)

// NewAccessController returns a controller accepting tokens signed by any
// key in keys. It returns an error when a required option is missing.
func NewAccessController(keys *KeySet, opts ControllerOptions) (*AccessController, error) {
	if keys == nil {
		return nil, errors.New("access controller: no keys")
	}
	if opts.Issuer == "" || opts.Service == "" || opts.Realm == "" {
		return nil, errors.New("access controller: issuer, service and realm are required")
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
	if opts.CacheSize == 0 {
		opts.CacheSize = 4096
	}
	c := &AccessController{keys: keys, opts: opts, cache: newVerifiedCache(opts.CacheSize)}
	c.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg(), jwt.SigningMethodRS256.Alg()}),
		jwt.WithIssuer(opts.Issuer),
		jwt.WithAudience(opts.Service),
		jwt.WithLeeway(opts.Leeway),
		jwt.WithTimeFunc(opts.Now),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	)
	return c, nil
}

// Grant is what a verified token allows for one request.
type Grant struct {
	// Login is the token's sub: a user name, robot+NAME, or "" for anonymous.
	Login string
	// Kind is user, robot or anonymous.
	Kind string
	// Groups are the user's groups when the token was issued.
	Groups []string
	// Resources are the requested resources, all granted.
	Resources []auth.Resource
	// TokenID is the jti, for audit lines.
	TokenID string
	// Expires is when the token stops being accepted (before leeway).
	Expires time.Time
}

// Authorized implements distribution's auth.AccessController: it returns
// a grant when the request's bearer token allows every access, and
// otherwise a *ChallengeError (which is an auth.Challenge).
func (c *AccessController) Authorized(r *http.Request, access ...auth.Access) (*auth.Grant, error) {
	g, err := c.Authorize(r, access...)
	if err != nil {
		return nil, err
	}
	return &auth.Grant{User: auth.UserInfo{Name: g.Login}, Resources: g.Resources}, nil
}

// Authorize is Authorized for our own handlers (the referrers API): it
// returns the grant, or a *ChallengeError whose Status and SetHeaders give
// the response. The error wraps ErrTokenRequired, ErrInvalidToken or
// ErrInsufficientScope.
func (c *AccessController) Authorize(r *http.Request, access ...auth.Access) (Grant, error) {
	challenge := func(sentinel, cause error) *ChallengeError {
		return &ChallengeError{err: sentinel, cause: cause, realm: c.opts.Realm, service: c.opts.Service, scope: scopeParam(access)}
	}
	scheme, raw, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || raw == "" {
		return Grant{}, challenge(ErrTokenRequired, nil)
	}
	claims, err := c.Verify(raw)
	if err != nil {
		c.deny(r.Context(), r, "", access, "invalid token", err)
		return Grant{}, challenge(ErrInvalidToken, err)
	}
	g := Grant{Login: claims.Subject, Kind: claims.Kind, Groups: claims.Groups, TokenID: claims.ID}
	if claims.ExpiresAt != nil {
		g.Expires = claims.ExpiresAt.Time
	}
	for _, a := range access {
		if !claims.allows(a.Type, a.Name, a.Action) {
			c.deny(r.Context(), r, claims.Subject, access, "insufficient scope", nil)
			return Grant{}, challenge(ErrInsufficientScope, fmt.Errorf("token does not grant %s:%s:%s", a.Type, a.Name, a.Action))
		}
		if !containsResource(g.Resources, a.Resource) {
			g.Resources = append(g.Resources, auth.Resource{Type: a.Type, Class: a.Class, Name: a.Name})
		}
	}
	return g, nil
}

func containsResource(rs []auth.Resource, r auth.Resource) bool {
	for _, x := range rs {
		if x.Type == r.Type && x.Name == r.Name {
			return true
		}
	}
	return false
}

func (c *AccessController) deny(ctx context.Context, r *http.Request, login string, access []auth.Access, reason string, cause error) {
	if cause != nil {
		c.opts.Logger.DebugContext(ctx, "token rejected", "err", cause)
	}
	e := audit.Event{
		Kind: audit.KindDecision, Subject: subjectName(login), Addr: c.opts.ClientAddr(r),
		Action: "access", Result: audit.ResultDenied, Reason: reason,
	}
	if len(access) > 0 {
		e.Repository = access[0].Name
		e.Scope = strings.Fields(scopeParam(access))
	}
	c.opts.Audit.Record(ctx, e)
}

// Verify checks a raw token: the algorithm is ES256 or RS256 and matches a
// key we know by its kid, the signature is valid, iss and aud are ours,
// exp, nbf and iat hold (with leeway), and it is an access token, not a
// refresh token. It returns the claims, or an error (never containing the
// token) describing the first problem.
//
// The returned claims may be shared with other callers: do not modify them.
func (c *AccessController) Verify(raw string) (*Claims, error) {
	if len(raw) > maxTokenLen {
		return nil, errors.New("token too long")
	}
	key := cacheKey(raw)
	if claims, ok := c.cache.get(key, c.opts.Now(), c.opts.Leeway); ok {
		return claims, nil
	}
	claims, err := verify(c.parser, c.keys, raw)
	if err != nil {
		return nil, err
	}
	if claims.Use != "" {
		return nil, fmt.Errorf("%s token used as access token", claims.Use)
	}
	c.cache.put(key, claims, c.opts.Now(), c.opts.Leeway)
	return claims, nil
}

// verify parses and checks a token against keys with the given parser.
func verify(p *jwt.Parser, keys *KeySet, raw string) (*Claims, error) {
	if len(raw) > maxTokenLen {
		return nil, errors.New("token too long")
	}
	claims := &Claims{}
	_, err := p.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		k, ok := keys.verify[kid]
		if !ok {
			return nil, errors.New("unknown kid")
		}
		if t.Method.Alg() != k.method.Alg() {
			return nil, fmt.Errorf("algorithm %s does not match key", t.Method.Alg())
		}
		return k.key, nil
	})
	if err != nil {
		return nil, fmt.Errorf("verify token: %w", err)
	}
	if claims.IssuedAt == nil || claims.NotBefore == nil || claims.ID == "" {
		return nil, errors.New("verify token: iat, nbf and jti are required")
	}
	return claims, nil
}

// maxTokenLen bounds the work an arbitrary Authorization header can cause.
const maxTokenLen = 16 << 10

// RemoteHost returns the host part of r.RemoteAddr.
func RemoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func subjectName(login string) string {
	switch {
	case login == "":
		return "anonymous"
	case strings.HasPrefix(login, pauth.RobotPrefix):
		return "robot:" + strings.TrimPrefix(login, pauth.RobotPrefix)
	}
	return "user:" + login
}
