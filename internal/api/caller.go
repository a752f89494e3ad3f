package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	dauth "github.com/distribution/distribution/v3/registry/auth"

	"github.com/portcullis/portcullis/auth/token"
)

// Authorizer checks a request's bearer token for the given accesses.
type Authorizer interface {
	Authorize(r *http.Request, access ...dauth.Access) (token.Grant, error)
}

// Caller is who sent a request, resolved once from its bearer token for the
// access its route needs (pull, push or delete on one repository).
type Caller struct {
	// Login is the token's subject when the token grants the access; ""
	// for anonymous, when auth is off, or when the access is not granted.
	Login string
	// Err is nil when the access is granted (or auth is off); otherwise
	// the answer to give when the handler refuses the request itself: an
	// auth challenge (401) or DENIED (403), as WriteError writes them.
	Err error
}

// Granted reports whether the token grants the access (always with auth off).
func (c Caller) Granted() bool { return c.Err == nil }

type callerKey struct{}

// WithCaller returns ctx carrying c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller stored by WithCaller, and false when none is.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// Resolve asks auth (nil: auth off, everything granted) once whether the
// request's token grants action on repository repo.
func Resolve(r *http.Request, auth Authorizer, repo, action string) Caller {
	if auth == nil {
		return Caller{}
	}
	grant, err := auth.Authorize(r, Access(repo, action))
	if err == nil {
		return Caller{Login: grant.Login}
	}
	var ch dauth.Challenge
	if errors.As(err, &ch) {
		return Caller{Err: err}
	}
	return Caller{Err: errcode.ErrorCodeDenied.WithMessage("access denied")}
}

// Access is the access to action on repository repo.
func Access(repo, action string) dauth.Access {
	return dauth.Access{Resource: dauth.Resource{Type: "repository", Name: repo}, Action: action}
}
