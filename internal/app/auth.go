package app

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/distribution/distribution/v3/configuration"
	dauth "github.com/distribution/distribution/v3/registry/auth"

	"github.com/portcullis/portcullis/auth/audit"
	"github.com/portcullis/portcullis/auth/token"
	"github.com/portcullis/portcullis/config"
)

// accessControllerName is our access controller in distribution's registry.
const (
	accessControllerName = "portcullis"
	optController        = "controller"
)

// preparedController hands distribution the access controller we built.
func preparedController(options map[string]any) (dauth.AccessController, error) {
	c, ok := options[optController].(dauth.AccessController)
	if !ok {
		return nil, errors.New("portcullis auth: no prepared access controller in options")
	}
	return c, nil
}

// openAudit opens the audit log of the auth section; it lives as long as
// the App (auth.audit changes need a restart). Without an audit file the
// log writes nothing and only counts, for the auth metrics.
func (a *App) openAudit() error {
	cfg := a.cfg.Auth.Audit
	metrics, err := newAuthMetrics(a.metrics)
	if err != nil {
		return err
	}
	w, closeAudit, err := audit.Open(cfg.File, audit.Rotation{MaxSize: int64(cfg.MaxSize), MaxFiles: cfg.MaxFiles}, os.Stdout, os.Stderr)
	if err != nil {
		return fmt.Errorf("auth.audit.file: %w", err)
	}
	a.closeAudit = closeAudit
	if a.audit, err = audit.New(w, audit.Options{Logger: a.log, Observe: metrics.observe}); err != nil {
		return err
	}
	return nil
}

// buildAuth builds the token service, access controller and policy of
// cfg's auth section, reading its key files, password files and htpasswd
// file. The login rate limiter of prev (the running generation, nil at
// start) is kept while auth.rateLimit stays the same, and with it the
// lockouts under way.
func (a *App) buildAuth(cfg *config.Config, prev *generation) (*token.Components, error) {
	deps := token.Deps{Realm: Realm(cfg), Store: a.driver, Audit: a.audit, Logger: a.log}
	if prev != nil && prev.auth != nil && prev.cfg.Auth.RateLimit == cfg.Auth.RateLimit {
		deps.Limiter = prev.auth.Limiter
	}
	c, err := token.FromConfig(cfg.Auth, deps)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return c, nil
}

// Realm returns the token endpoint URL announced to clients: auth.token.realm,
// else http.host + /token, else the listen address.
func Realm(cfg *config.Config) string {
	if r := cfg.Auth.Token.Realm; r != "" {
		return r
	}
	if h := cfg.HTTP.Host; h != "" {
		return strings.TrimSuffix(h, "/") + "/token"
	}
	scheme := "http"
	if cfg.HTTP.TLS.Enabled() {
		scheme = "https"
	}
	return scheme + "://" + cfg.HTTP.Addr + "/token"
}

// distributionAuth is distribution's auth section for our controller.
func distributionAuth(c dauth.AccessController) configuration.Auth {
	return configuration.Auth{accessControllerName: configuration.Parameters{optController: c}}
}

// liveController is the access controller distribution holds for the
// life of the App: it checks each request with the controller of the
// generation the request started under.
type liveController struct{}

var _ dauth.AccessController = liveController{}

// Authorized implements distribution's auth.AccessController.
func (liveController) Authorized(r *http.Request, access ...dauth.Access) (*dauth.Grant, error) {
	g := generationOf(r.Context())
	if g == nil || g.auth == nil {
		return nil, errors.New("no configuration generation in the request context")
	}
	return g.auth.Controller.Authorized(r, access...)
}
