package app

import (
	"context"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/reference"

	"github.com/portcullis/portcullis/auth/audit"
	"github.com/portcullis/portcullis/internal/admission"
	"github.com/portcullis/portcullis/internal/referrers"
	"github.com/portcullis/portcullis/trust"
)

// buildAdmission builds the trust verifier and admission gate when the
// configuration has trust policies, scan policies or webhooks; nil otherwise.
func (a *App) buildAdmission(repos admissionRepos, refs *referrers.Handler) (*admission.Gate, error) {
	cfg := a.cfg
	if len(cfg.Trust.Policies) == 0 && len(cfg.Admission.Webhooks) == 0 && len(cfg.Scan.Policies) == 0 {
		return nil, nil
	}
	content := &admission.Content{Repos: repos, Refs: refs}
	var verifier admission.Verifier
	if len(cfg.Trust.Policies) > 0 {
		v, err := trust.New(cfg.Trust, content, trust.Options{Logger: a.log, Aliases: a.caches.Aliases})
		if err != nil {
			return nil, err
		}
		verifier = v
	}
	pushers, err := admission.NewPushers(a.db.Bolt())
	if err != nil {
		return nil, err
	}
	var log *audit.Log
	if a.auth != nil {
		log = a.auth.audit
	}
	return admission.New(admission.Options{
		Verifier: verifier, Parents: content, Manifests: content, Scans: a.scanner, Webhooks: cfg.Admission.Webhooks, Pushers: pushers, Audit: log,
		Log: a.log, Metrics: a.metrics,
	})
}

// admissionRepos opens repositories (distribution's storage namespace).
type admissionRepos = interface {
	Repository(ctx context.Context, name reference.Named) (distribution.Repository, error)
}
