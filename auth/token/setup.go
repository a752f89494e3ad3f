package token

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	pauth "github.com/portcullis/portcullis/auth"
	"github.com/portcullis/portcullis/auth/audit"
	"github.com/portcullis/portcullis/auth/ratelimit"
	"github.com/portcullis/portcullis/config"
)

// Deps are what FromConfig needs besides the auth section.
type Deps struct {
	// Realm is the absolute URL of the token endpoint (cfg.Token.Realm, or
	// derived by the server from http.host).
	Realm string
	// Store keeps robot records (the storage driver); nil disables robots.
	Store Store
	// Audit records authentications and decisions; nil records nothing.
	Audit *audit.Log
	// ClientAddr extracts the client address; default RemoteHost.
	ClientAddr func(*http.Request) string
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Limiter rate-limits failed logins; default a new one from
	// cfg.RateLimit. Passing the previous one keeps its lockouts across a
	// reload of the configuration.
	Limiter *ratelimit.Limiter
}

// Components are the auth parts built from one configuration.
type Components struct {
	Policy *pauth.Policy
	Keys   *KeySet
	Users  *Users
	Robots *Robots // nil when robots are disabled
	// Refreshes records refresh tokens; nil (no refresh tokens) without a
	// store or with a negative refresh lifetime.
	Refreshes  *Refreshes
	Service    *Service
	Controller *AccessController
	// Limiter is the login rate limiter the service uses.
	Limiter *ratelimit.Limiter
}

// FromConfig builds every auth component from a provisioned, validated
// auth section: it reads the key files, password files and htpasswd file.
// It returns an error naming what is wrong, and for a disabled section.
func FromConfig(cfg config.Auth, deps Deps) (*Components, error) {
	if !cfg.Enabled {
		return nil, errors.New("auth is disabled")
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	c := &Components{}
	var err error
	// The policy, the keys and the users are read independently, so that
	// one error names every file that is wrong.
	var errs []error
	if c.Policy, err = pauth.NewPolicy(cfg); err != nil {
		errs = append(errs, fmt.Errorf("auth policy: %w", err))
	}
	if c.Keys, err = LoadKeySet(cfg.Token.SigningKeyFile, cfg.Token.VerificationKeyFiles...); err != nil {
		errs = append(errs, err)
	}
	if c.Users, err = LoadUsers(cfg); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	logger := deps.Logger
	if logger == nil {
		logger = slog.Default()
	}
	for _, w := range c.Users.Weak() {
		logger.Warn("weak password hash: bcrypt cost below 10, rehash with registry auth hash",
			"user", w.Name, "cost", w.Cost)
	}
	if cfg.Robots.On() && deps.Store != nil {
		if c.Robots, err = NewRobots(deps.Store, RobotsOptions{Dir: cfg.Robots.Path, MaxLifetime: cfg.Robots.MaxLifetime.D(), Now: deps.Now}); err != nil {
			return nil, err
		}
	}
	if deps.Store != nil && cfg.Token.RefreshLifetime >= 0 {
		if c.Refreshes, err = NewRefreshes(deps.Store, RefreshesOptions{Now: deps.Now}); err != nil {
			return nil, err
		}
	}
	limiter := deps.Limiter
	if limiter == nil {
		if limiter, err = NewLimiter(cfg.RateLimit, deps.Now); err != nil {
			return nil, err
		}
	}
	c.Limiter = limiter
	c.Service, err = NewService(c.Keys, c.Policy, c.Users, Options{
		Issuer: cfg.Token.Issuer, Service: cfg.Token.Service,
		Lifetime: cfg.Token.Lifetime.D(), RefreshLifetime: cfg.Token.RefreshLifetime.D(), Leeway: cfg.Token.Leeway.D(),
		Robots: c.Robots, Refreshes: c.Refreshes, Limiter: limiter, Audit: deps.Audit, ClientAddr: deps.ClientAddr, Now: deps.Now, Logger: deps.Logger,
	})
	if err != nil {
		return nil, err
	}
	realm := deps.Realm
	if realm == "" {
		realm = cfg.Token.Realm
	}
	c.Controller, err = NewAccessController(c.Keys, ControllerOptions{
		Issuer: cfg.Token.Issuer, Service: cfg.Token.Service, Realm: realm, Leeway: cfg.Token.Leeway.D(),
		Now: deps.Now, Audit: deps.Audit, ClientAddr: deps.ClientAddr, Logger: deps.Logger,
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// NewLimiter returns the login rate limiter the rateLimit section
// describes, on clock now (nil: time.Now).
func NewLimiter(rl config.AuthRateLimit, now func() time.Time) (*ratelimit.Limiter, error) {
	return ratelimit.New(ratelimit.Options{
		AddressFailures: rl.AddressFailures, UserFailures: rl.UserFailures,
		Backoff: rl.Backoff.D(), MaxBackoff: rl.MaxBackoff.D(), Window: rl.Window.D(), Now: now,
	})
}
