package trust

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/notaryproject/notation-go"
	notationverifier "github.com/notaryproject/notation-go/verifier"
	"github.com/notaryproject/notation-go/verifier/trustpolicy"
	"github.com/notaryproject/notation-go/verifier/truststore"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"

	"github.com/portcullis/portcullis/auth"
	"github.com/portcullis/portcullis/config"
)

// rule is one compiled trust.policies entry.
type rule struct {
	name       string
	patterns   []auth.Pattern
	mode       Mode
	requireAll bool
	signers    []string // configured names, in order
	keys       []*keySigner
	identities []*identitySigner
	// requireTlog makes bundles without a verified Rekor entry invalid.
	requireTlog bool
	// requireBinding makes bundles and Notation signatures without the
	// repository annotation invalid.
	requireBinding bool
	trustedRoot    root.TrustedMaterial
	version        string
}

func (r *rule) match(repo string) bool {
	for _, p := range r.patterns {
		if p.Match(repo) {
			return true
		}
	}
	return false
}

// keySigner is a trusted cosign public key.
type keySigner struct {
	name string
	// id is "SHA256:" and the hex SHA-256 of the key's PKIX DER encoding.
	id  string
	pub crypto.PublicKey
	// verifiers are the signature schemes cosign may have used with the
	// key: the key type's default, plus SHA-256 for ECDSA and RSA keys and
	// Ed25519ph for Ed25519 keys.
	verifiers []signature.Verifier
}

// identitySigner is a trusted Notation identity: a trust policy statement
// and its trust stores, ready to verify.
type identitySigner struct {
	name     string
	verifier notation.Verifier
}

// loadKey reads a PEM public key and prepares its verifiers.
func loadKey(k config.TrustKey) (*keySigner, []byte, error) {
	data, err := os.ReadFile(k.File)
	if err != nil {
		return nil, nil, fmt.Errorf("read key %s: %w", k.Name, err)
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(data)
	if err != nil {
		return nil, nil, fmt.Errorf("key %s: %s: %w", k.Name, k.File, err)
	}
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		switch p.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return nil, nil, fmt.Errorf("key %s: unsupported ECDSA curve", k.Name)
		}
	case *rsa.PublicKey:
		if p.N.BitLen() < 2048 {
			return nil, nil, fmt.Errorf("key %s: RSA key of %d bits, want at least 2048", k.Name, p.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return nil, nil, fmt.Errorf("key %s: unsupported key type %T (want ECDSA, Ed25519 or RSA)", k.Name, pub)
	}
	der, err := cryptoutils.MarshalPublicKeyToDER(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("key %s: %w", k.Name, err)
	}
	sum := sha256.Sum256(der)
	s := &keySigner{name: k.Name, id: "SHA256:" + hex.EncodeToString(sum[:]), pub: pub}
	def, err := signature.LoadDefaultVerifier(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("key %s: %w", k.Name, err)
	}
	s.verifiers = append(s.verifiers, def)
	var extra signature.Verifier
	switch pub.(type) {
	case ed25519.PublicKey:
		extra, err = signature.LoadVerifierWithOpts(pub, options.WithED25519ph())
	default:
		extra, err = signature.LoadVerifier(pub, crypto.SHA256)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("key %s: %w", k.Name, err)
	}
	s.verifiers = append(s.verifiers, extra)
	return s, der, nil
}

// memTrustStore is a Notation X509TrustStore held in memory, keyed by
// "type:name".
type memTrustStore map[string][]*x509.Certificate

// GetCertificates implements truststore.X509TrustStore.
func (m memTrustStore) GetCertificates(_ context.Context, storeType truststore.Type, name string) ([]*x509.Certificate, error) {
	certs, ok := m[string(storeType)+":"+name]
	if !ok {
		return nil, fmt.Errorf("trust store %s:%s: %w", storeType, name, ErrNotFound)
	}
	return certs, nil
}

// loadTrustStore reads the PEM certificates of one trust store.
func loadTrustStore(s config.TrustStore) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for _, f := range s.Files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read trust store %s:%s: %w", s.Type, s.Name, err)
		}
		for {
			var b *pem.Block
			b, data = pem.Decode(data)
			if b == nil {
				break
			}
			if b.Type != "CERTIFICATE" {
				continue
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("trust store %s:%s: %s: %w", s.Type, s.Name, f, err)
			}
			certs = append(certs, c)
		}
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("trust store %s:%s: no PEM certificates in %v", s.Type, s.Name, s.Files)
	}
	return certs, nil
}

// newIdentity builds the Notation verifier of one identity: a trust policy
// document with a single statement for every registry scope (the Verifier
// has already chosen the policy by repository) and the stores it names.
func newIdentity(id config.TrustIdentity, stores memTrustStore) (*identitySigner, error) {
	// Always strict: permissive and audit only log expired and untrusted
	// certificates.
	sv := trustpolicy.SignatureVerification{VerificationLevel: trustpolicy.LevelStrict.Name}
	if id.Revocation != "" && id.Revocation != string(trustpolicy.ActionEnforce) {
		sv.Override = map[trustpolicy.ValidationType]trustpolicy.ValidationAction{
			trustpolicy.TypeRevocation: trustpolicy.ValidationAction(id.Revocation),
		}
	}
	doc := &trustpolicy.Document{
		Version: "1.0",
		TrustPolicies: []trustpolicy.TrustPolicy{{
			Name:                  id.Name,
			RegistryScopes:        []string{"*"},
			SignatureVerification: sv,
			TrustStores:           id.TrustStores,
			TrustedIdentities:     id.TrustedIdentities,
		}},
	}
	only := memTrustStore{}
	for _, ref := range id.TrustStores {
		certs, ok := stores[ref]
		if !ok {
			return nil, fmt.Errorf("identity %s: unknown trust store %q", id.Name, ref)
		}
		only[ref] = certs
	}
	// No plugin manager: a signature that needs a verification plugin is
	// inconclusive, hence invalid.
	v, err := notationverifier.NewWithOptions(doc, only, nil, notationverifier.VerifierOptions{})
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", id.Name, err)
	}
	return &identitySigner{name: id.Name, verifier: v}, nil
}

// compile turns the trust configuration into rules, reading every key,
// certificate and trusted root file it names.
func compile(cfg config.Trust) ([]*rule, error) {
	if errs := cfg.Validate("trust"); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	keys := map[string]*keySigner{}
	keyDER := map[string][]byte{}
	for _, k := range cfg.Keys {
		s, der, err := loadKey(k)
		if err != nil {
			return nil, err
		}
		keys[k.Name], keyDER[k.Name] = s, der
	}
	stores := memTrustStore{}
	storeSums := map[string][]string{}
	for _, s := range cfg.TrustStores {
		certs, err := loadTrustStore(s)
		if err != nil {
			return nil, err
		}
		ref := s.Type + ":" + s.Name
		stores[ref] = certs
		for _, c := range certs {
			sum := sha256.Sum256(c.Raw)
			storeSums[ref] = append(storeSums[ref], hex.EncodeToString(sum[:]))
		}
	}
	identities := map[string]*identitySigner{}
	identityCfg := map[string]config.TrustIdentity{}
	for _, id := range cfg.Identities {
		s, err := newIdentity(id, stores)
		if err != nil {
			return nil, err
		}
		identities[id.Name], identityCfg[id.Name] = s, id
	}
	var trustedRoot root.TrustedMaterial
	var rootSum string
	if cfg.TrustedRootFile != "" {
		data, err := os.ReadFile(cfg.TrustedRootFile)
		if err != nil {
			return nil, fmt.Errorf("read trusted root: %w", err)
		}
		tr, err := root.NewTrustedRootFromJSON(data)
		if err != nil {
			return nil, fmt.Errorf("trusted root %s: %w", cfg.TrustedRootFile, err)
		}
		trustedRoot = tr
		sum := sha256.Sum256(data)
		rootSum = hex.EncodeToString(sum[:])
	}

	rules := make([]*rule, 0, len(cfg.Policies))
	for i, p := range cfg.Policies {
		r := &rule{
			name:           p.Name,
			mode:           Mode(p.Mode),
			requireAll:     p.Require == "all",
			signers:        append([]string(nil), p.Signers...),
			requireTlog:    p.RequireTransparencyLog,
			requireBinding: p.RequireRepositoryBinding,
		}
		if r.requireTlog {
			r.trustedRoot = trustedRoot
		}
		for _, pat := range p.Repositories {
			cp, err := auth.ParsePattern(pat)
			if err != nil {
				return nil, fmt.Errorf("trust.policies[%d].repositories: %w", i, err)
			}
			r.patterns = append(r.patterns, cp)
		}
		// The version covers the statement and every byte of trust material
		// it depends on.
		ver := struct {
			Policy     config.TrustPolicy
			Keys       map[string][]byte
			Identities map[string]config.TrustIdentity
			Stores     map[string][]string
			Root       string
		}{Policy: p, Keys: map[string][]byte{}, Identities: map[string]config.TrustIdentity{}, Stores: map[string][]string{}}
		for _, name := range p.Signers {
			if k, ok := keys[name]; ok {
				r.keys = append(r.keys, k)
				ver.Keys[name] = keyDER[name]
				continue
			}
			id := identities[name]
			r.identities = append(r.identities, id)
			ver.Identities[name] = identityCfg[name]
			for _, ref := range identityCfg[name].TrustStores {
				ver.Stores[ref] = storeSums[ref]
			}
		}
		if r.requireTlog {
			ver.Root = rootSum
		}
		data, err := json.Marshal(ver) // maps marshal with sorted keys
		if err != nil {
			return nil, fmt.Errorf("policy %s: version: %w", p.Name, err)
		}
		sum := sha256.Sum256(data)
		r.version = "sha256:" + hex.EncodeToString(sum[:])
		rules = append(rules, r)
	}
	return rules, nil
}

// sortedKeys returns the keys of a set, sorted.
func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
