package app

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/portcullis/portcullis/auth/token"
	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/admission"
	"github.com/portcullis/portcullis/internal/server"
	"github.com/portcullis/portcullis/trust"
)

// CheckFiles reads and parses every file cfg (provisioned and validated)
// names, as start-up and a reload would: the token keys, password files
// and htpasswd file, trust keys and trust stores, scan policies, webhook
// secrets and certificates, the TLS pair and the remotes' credentials and
// CA files. It returns every problem, joined; it opens no storage, listens
// nowhere and calls no remote.
func CheckFiles(cfg *config.Config) error {
	log := slog.New(slog.DiscardHandler)
	var errs []error
	if cfg.Auth.Enabled {
		if _, err := token.FromConfig(cfg.Auth, token.Deps{Realm: Realm(cfg), Logger: log}); err != nil {
			errs = append(errs, fmt.Errorf("auth: %w", err))
		}
	}
	if len(cfg.Trust.Policies) > 0 {
		if _, err := trust.New(cfg.Trust, noContent{}, trust.Options{Logger: log}); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := compileScanGates(cfg.Scan); err != nil {
		errs = append(errs, err)
	}
	if err := admission.CheckWebhooks(cfg.Admission.Webhooks); err != nil {
		errs = append(errs, fmt.Errorf("admission.webhooks: %w", err))
	}
	if t := cfg.HTTP.TLS; t.Enabled() {
		if _, err := server.LoadKeyPair(t.CertFile, t.KeyFile); err != nil {
			errs = append(errs, fmt.Errorf("http.tls: %w", err))
		}
	}
	a := &App{cfg: cfg, log: log}
	if _, err := a.buildRemotes(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// noContent is the content a configuration check gives the trust verifier:
// it is built, never asked.
type noContent struct{ trust.Content }
