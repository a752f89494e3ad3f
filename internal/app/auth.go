package app

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/distribution/distribution/v3/configuration"
	dauth "github.com/distribution/distribution/v3/registry/auth"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"

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

// authParts are the auth components of a running App.
type authParts struct {
	*token.Components
	audit      *audit.Log
	closeAudit func() error
}

// buildAuth builds the token service, access controller, policy and audit
// log from the auth section.
func (a *App) buildAuth(driver storagedriver.StorageDriver) (*authParts, error) {
	cfg := a.cfg
	metrics, err := newAuthMetrics(a.metrics)
	if err != nil {
		return nil, err
	}
	w, closeAudit, err := audit.Open(cfg.Auth.Audit.File,
		audit.Rotation{MaxSize: int64(cfg.Auth.Audit.MaxSize), MaxFiles: cfg.Auth.Audit.MaxFiles}, os.Stdout, os.Stderr)
	if err != nil {
		return nil, fmt.Errorf("auth.audit.file: %w", err)
	}
	// Without an audit file the log writes nothing and only counts.
	log, err := audit.New(w, audit.Options{Logger: a.log, Observe: metrics.observe})
	if err != nil {
		_ = closeAudit()
		return nil, err
	}
	c, err := token.FromConfig(cfg.Auth, token.Deps{Realm: Realm(cfg), Store: driver, Audit: log, Logger: a.log})
	if err != nil {
		_ = closeAudit()
		return nil, fmt.Errorf("auth: %w", err)
	}
	if c.Robots != nil {
		if err := a.metrics.Register(newRobotExpiry(c.Robots)); err != nil {
			_ = closeAudit()
			return nil, fmt.Errorf("register robot metrics: %w", err)
		}
	}
	return &authParts{Components: c, audit: log, closeAudit: closeAudit}, nil
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
