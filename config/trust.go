package config

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/portcullis/portcullis/policy"
)

// Trust configures signature verification: the cosign public keys and
// Notation identities the registry trusts, and per repository pattern which
// of them must have signed and what happens to content that is not signed.
// The zero value trusts nothing and has no policies: nothing is gated.
type Trust struct {
	// Keys are cosign public keys (PEM: ECDSA P-256, Ed25519 or RSA).
	Keys []TrustKey `yaml:"keys"`
	// TrustStores are Notation trust stores: named sets of X.509 certificates.
	TrustStores []TrustStore `yaml:"trustStores"`
	// Identities are Notation signers: a trust policy statement (trust
	// stores, trusted identities, verification level) under a name.
	Identities []TrustIdentity `yaml:"identities"`
	// Policies say, per repository pattern, which signers are trusted. The
	// first policy whose pattern matches a repository applies.
	Policies []TrustPolicy `yaml:"policies"`
	// TrustedRootFile is a Sigstore trusted_root.json (Rekor keys) used only
	// by policies that set requireTransparencyLog.
	TrustedRootFile string `yaml:"trustedRootFile"`
	// CacheSize bounds the number of cached signature results; default 4096.
	CacheSize int `yaml:"cacheSize"`
	// CacheTTL is how long a cached signature result is reused; default 10m.
	CacheTTL Duration `yaml:"cacheTTL"`
}

// TrustKey is a named cosign public key.
type TrustKey struct {
	// Name is what policies and require lists refer to.
	Name string `yaml:"name"`
	// File is a PEM public key (PKIX "PUBLIC KEY" or PKCS#1 "RSA PUBLIC KEY").
	File string `yaml:"file"`
}

// TrustStore is a named Notation trust store.
type TrustStore struct {
	Name string `yaml:"name"`
	// Type is ca (default), signingAuthority or tsa.
	Type string `yaml:"type"`
	// Files are PEM files holding one or more certificates each.
	Files []string `yaml:"files"`
}

// TrustIdentity is a named Notation signer: the trust policy statement a
// Notation signature is verified with.
type TrustIdentity struct {
	Name string `yaml:"name"`
	// TrustStores are TYPE:NAME references into trust.trustStores, as in a
	// Notation trust policy (ca:acme).
	TrustStores []string `yaml:"trustStores"`
	// TrustedIdentities are "x509.subject: DN" entries, or "*" for any
	// certificate that chains to the trust stores.
	TrustedIdentities []string `yaml:"trustedIdentities"`
	// Revocation overrides the revocation check of Notation's strict
	// verification level (the only level used: permissive and audit would
	// accept expired or untrusted certificates): enforce (default), log or
	// skip. In an air gap without reachable OCSP or CRL endpoints, a
	// certificate that names them fails under enforce.
	Revocation string `yaml:"revocation"`
}

// TrustPolicy applies to repositories matching its patterns.
type TrustPolicy struct {
	// Name identifies the policy in verdicts; default policies[i].
	Name string `yaml:"name"`
	// Repositories are patterns as in auth rules (team/**).
	Repositories []string `yaml:"repositories"`
	// Mode is enforce (default), quarantine or audit.
	Mode string `yaml:"mode"`
	// Signers names trust.keys and trust.identities entries whose
	// signatures count in these repositories.
	Signers []string `yaml:"signers"`
	// Require is any (default: one valid signature from a listed signer
	// suffices) or all (every listed signer must have signed).
	Require string `yaml:"require"`
	// RequireTransparencyLog makes cosign bundles without a verified Rekor
	// entry invalid; it needs trust.trustedRootFile. Default false: key-signed
	// bundles verify offline, without transparency log or timestamps.
	RequireTransparencyLog bool `yaml:"requireTransparencyLog"`
	// RequireRepositoryBinding makes cosign bundles and Notation signatures
	// valid only when they carry the signed annotation
	// dev.portcullis.repository=<repository> (cosign sign -a, notation sign
	// --user-metadata), so a signature copied from another repository is
	// rejected. Without it such a signature counts if its signer is trusted
	// here; an annotation naming another repository is always rejected, and
	// legacy cosign signatures always name their repository.
	RequireRepositoryBinding bool `yaml:"requireRepositoryBinding"`
}

// Provision fills unset trust fields with their defaults. It is idempotent.
func (t *Trust) Provision() {
	if t.CacheSize == 0 {
		t.CacheSize = 4096
	}
	if t.CacheTTL == 0 {
		t.CacheTTL = Duration(10 * time.Minute)
	}
	for i := range t.TrustStores {
		if t.TrustStores[i].Type == "" {
			t.TrustStores[i].Type = "ca"
		}
	}
	for i := range t.Identities {
		if t.Identities[i].Revocation == "" {
			t.Identities[i].Revocation = "enforce"
		}
	}
	for i := range t.Policies {
		p := &t.Policies[i]
		if p.Name == "" {
			p.Name = fmt.Sprintf("policies[%d]", i)
		}
		if p.Mode == "" {
			p.Mode = string(policy.ModeEnforce)
		}
		if p.Require == "" {
			p.Require = "any"
		}
	}
}

// trustNameRE is the syntax of key, store and identity names.
var trustNameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$`) })

// Validate checks the provisioned trust section and returns every problem,
// each prefixed with its key path under prefix (normally "trust"). It does
// not read the files; the trust package does, and reports what it finds.
func (t *Trust) Validate(prefix string) []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", prefix, key, fmt.Sprintf(format, args...)))
	}
	if t.CacheSize < 0 {
		bad("cacheSize", "must not be negative")
	}
	if t.CacheTTL < 0 {
		bad("cacheTTL", "must not be negative")
	}
	signers := signerNames{bad: bad, defined: map[string]string{}}
	for i, k := range t.Keys {
		key := fmt.Sprintf("keys[%d]", i)
		signers.define(key, k.Name)
		if k.File == "" {
			bad(key+".file", "required")
		}
	}
	stores := t.validateTrustStores(bad)
	for i, id := range t.Identities {
		key := fmt.Sprintf("identities[%d]", i)
		signers.define(key, id.Name)
		id.validate(bad, key, stores)
	}
	for i, p := range t.Policies {
		p.validate(bad, prefix, fmt.Sprintf("policies[%d]", i), signers.defined, t.TrustedRootFile != "")
	}
	return errs
}

// signerNames collects the names of keys and identities, which share one
// namespace.
type signerNames struct {
	bad     func(key, format string, args ...any)
	defined map[string]string // name -> key path that defined it
}

// define records the signer name of the entry at key, reporting an invalid
// or duplicate name.
func (s signerNames) define(key, name string) {
	switch {
	case !trustNameRE().MatchString(name):
		s.bad(key+".name", "invalid name %q", name)
	case s.defined[name] != "":
		s.bad(key+".name", "duplicate signer name %q (also %s)", name, s.defined[name])
	default:
		s.defined[name] = key
	}
}

// validateTrustStores checks the trust stores and returns the set of their
// TYPE:NAME references.
func (t *Trust) validateTrustStores(bad func(key, format string, args ...any)) map[string]bool {
	stores := map[string]bool{}
	for i, s := range t.TrustStores {
		key := fmt.Sprintf("trustStores[%d]", i)
		if !trustNameRE().MatchString(s.Name) {
			bad(key+".name", "invalid name %q", s.Name)
		}
		switch s.Type {
		case "ca", "signingAuthority", "tsa":
		default:
			bad(key+".type", "must be ca, signingAuthority or tsa, got %q", s.Type)
		}
		ref := s.Type + ":" + s.Name
		if stores[ref] {
			bad(key+".name", "duplicate trust store %q", ref)
		}
		stores[ref] = true
		if len(s.Files) == 0 {
			bad(key+".files", "required")
		}
		for j, f := range s.Files {
			if f == "" {
				bad(fmt.Sprintf("%s.files[%d]", key, j), "empty path")
			}
		}
	}
	return stores
}

// validate checks the identity at key (but not its name) against the trust
// stores.
func (id TrustIdentity) validate(bad func(key, format string, args ...any), key string, stores map[string]bool) {
	if len(id.TrustStores) == 0 {
		bad(key+".trustStores", "required")
	}
	for j, ref := range id.TrustStores {
		switch {
		case !strings.Contains(ref, ":"):
			bad(fmt.Sprintf("%s.trustStores[%d]", key, j), "want TYPE:NAME (ca:acme), got %q", ref)
		case !stores[ref]:
			bad(fmt.Sprintf("%s.trustStores[%d]", key, j), "unknown trust store %q", ref)
		}
	}
	if len(id.TrustedIdentities) == 0 {
		bad(key+".trustedIdentities", "required (\"x509.subject: DN\" entries, or \"*\")")
	}
	for j, ti := range id.TrustedIdentities {
		if ti != "*" && !strings.HasPrefix(ti, "x509.subject:") {
			bad(fmt.Sprintf("%s.trustedIdentities[%d]", key, j), "want \"x509.subject: DN\" or \"*\", got %q", ti)
		}
	}
	switch id.Revocation {
	case "enforce", "log", "skip":
	default:
		bad(key+".revocation", "must be enforce, log or skip, got %q", id.Revocation)
	}
}

// validate checks the policy at key against the defined signers; prefix is
// the trust section's own key path, which messages refer to.
func (p TrustPolicy) validate(bad func(key, format string, args ...any), prefix, key string, signers map[string]string, trustedRoot bool) {
	if len(p.Repositories) == 0 {
		bad(key+".repositories", "required")
	}
	checkPatterns(bad, key+".repositories", p.Repositories)
	checkMode(bad, key+".mode", p.Mode)
	switch p.Require {
	case "any", "all":
	default:
		bad(key+".require", "must be any or all, got %q", p.Require)
	}
	if len(p.Signers) == 0 && p.Mode != string(policy.ModeAudit) {
		bad(key+".signers", "required: with no trusted signer nothing could ever pass")
	}
	seen := map[string]bool{}
	for j, s := range p.Signers {
		switch {
		case signers[s] == "":
			bad(fmt.Sprintf("%s.signers[%d]", key, j), "unknown signer %q (define it in %s.keys or %s.identities)", s, prefix, prefix)
		case seen[s]:
			bad(fmt.Sprintf("%s.signers[%d]", key, j), "duplicate signer %q", s)
		}
		seen[s] = true
	}
	if p.RequireTransparencyLog && !trustedRoot {
		bad(key+".requireTransparencyLog", "needs %s.trustedRootFile", prefix)
	}
}
