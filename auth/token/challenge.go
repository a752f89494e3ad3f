package token

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/distribution/distribution/v3/registry/auth"
)

// Errors the AccessController returns, each inside a *ChallengeError.
var (
	// ErrTokenRequired is returned when the request carries no bearer token.
	ErrTokenRequired = errors.New("authorization token required")
	// ErrInvalidToken is returned for a token that is malformed, badly
	// signed, signed by an unknown key, expired, not yet valid, or issued by
	// or for someone else.
	ErrInvalidToken = errors.New("invalid token")
	// ErrInsufficientScope is returned for a valid token that does not
	// grant every requested access.
	ErrInsufficientScope = errors.New("insufficient scope")
)

// ChallengeError is the error the AccessController returns. It implements
// distribution's auth.Challenge: SetHeaders writes the WWW-Authenticate
// header that sends the client to the token service with the scope it
// needs. Unwrap returns ErrTokenRequired, ErrInvalidToken or
// ErrInsufficientScope.
type ChallengeError struct {
	err     error
	cause   error // for logs and audit; never shown to clients
	realm   string
	service string
	scope   string
}

var _ auth.Challenge = (*ChallengeError)(nil)

// Error returns the client-safe reason.
func (e *ChallengeError) Error() string { return e.err.Error() }

// Unwrap returns the sentinel.
func (e *ChallengeError) Unwrap() error { return e.err }

// Cause returns the detailed reason a token was rejected (for logs; it
// never contains the token).
func (e *ChallengeError) Cause() error {
	if e.cause != nil {
		return e.cause
	}
	return e.err
}

// Status returns the HTTP status to answer with: 401 for every challenge,
// insufficient_scope included, as distribution does, so that clients fetch
// a token with the scope named in the challenge.
func (e *ChallengeError) Status() int { return http.StatusUnauthorized }

// Header returns the WWW-Authenticate value.
func (e *ChallengeError) Header() string {
	var b strings.Builder
	b.WriteString("Bearer realm=")
	b.WriteString(strconv.Quote(e.realm))
	b.WriteString(",service=")
	b.WriteString(strconv.Quote(e.service))
	if e.scope != "" {
		b.WriteString(",scope=")
		b.WriteString(strconv.Quote(e.scope))
	}
	switch {
	case errors.Is(e.err, ErrInvalidToken):
		b.WriteString(`,error="invalid_token"`)
	case errors.Is(e.err, ErrInsufficientScope):
		b.WriteString(`,error="insufficient_scope"`)
	}
	return b.String()
}

// SetHeaders adds the WWW-Authenticate header.
func (e *ChallengeError) SetHeaders(_ *http.Request, w http.ResponseWriter) {
	w.Header().Add("WWW-Authenticate", e.Header())
}

// scopeParam formats requested accesses as the challenge's scope
// parameter: one TYPE:NAME:ACTIONS per resource, in request order.
func scopeParam(access []auth.Access) string {
	type res struct{ typ, name string }
	var order []res
	acts := map[res][]string{}
	for _, a := range access {
		r := res{a.Type, a.Name}
		if _, ok := acts[r]; !ok {
			order = append(order, r)
		}
		if !contains(acts[r], a.Action) {
			acts[r] = append(acts[r], a.Action)
		}
	}
	parts := make([]string, 0, len(order))
	for _, r := range order {
		parts = append(parts, r.typ+":"+r.name+":"+strings.Join(acts[r], ","))
	}
	return strings.Join(parts, " ")
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
