package app

import (
	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/admission"
	"github.com/portcullis/portcullis/trust"
)

// buildVerifier builds the trust verifier of cfg's trust section, reading
// every key, trust store and trusted root it names; nil without trust
// policies or without a registry core (token-only).
func (a *App) buildVerifier(cfg *config.Config) (*trust.Verifier, error) {
	if len(cfg.Trust.Policies) == 0 || a.core == nil {
		return nil, nil
	}
	return trust.New(cfg.Trust, a.core.content, trust.Options{Logger: a.log, Aliases: a.caches.Aliases})
}

// buildAdmission builds the admission gate of generation g when its
// configuration has trust policies, scan policies or webhooks; nil
// otherwise.
func (a *App) buildAdmission(g *generation) (*admission.Gate, error) {
	cfg := g.cfg
	if len(cfg.Trust.Policies) == 0 && len(cfg.Admission.Webhooks) == 0 && len(cfg.Scan.Policies) == 0 {
		return nil, nil
	}
	var verifier admission.Verifier
	if g.verifier != nil {
		verifier = g.verifier
	}
	return admission.New(admission.Options{
		Verifier: verifier, Parents: a.core.content, Manifests: a.core.content, Scans: a.scanner.Under(g.gates),
		Webhooks: cfg.Admission.Webhooks, Pushers: a.core.pushers, Audit: a.audit,
		ReadOnly: a.caches.Owns, Log: a.log, Metrics: a.metrics,
	})
}
