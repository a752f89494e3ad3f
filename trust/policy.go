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

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/policy"
)

// rule is one compiled trust.policies entry.
type rule struct {
	name       string
	mode       policy.Mode
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
// certificate and trusted root file it names. The first rule whose pattern
// matches a repository applies.
func compile(cfg config.Trust) (policy.Set[*rule], error) {
	if errs := cfg.Validate("trust"); len(errs) > 0 {
		return policy.Set[*rule]{}, errors.Join(errs...)
	}
	m, err := loadMaterial(cfg)
	if err != nil {
		return policy.Set[*rule]{}, err
	}
	entries := make([]policy.Entry[*rule], 0, len(cfg.Policies))
	for i, p := range cfg.Policies {
		patterns, err := policy.ParsePatterns(p.Repositories)
		if err != nil {
			return policy.Set[*rule]{}, fmt.Errorf("trust.policies[%d].repositories: %w", i, err)
		}
		r, err := m.rule(p)
		if err != nil {
			return policy.Set[*rule]{}, err
		}
		entries = append(entries, policy.Entry[*rule]{Patterns: patterns, Value: r})
	}
	return policy.NewSet(entries...), nil
}

// material is the trust material the policies draw on, read from the files
// the configuration names, with the digests that policy versions cover.
type material struct {
	keys        map[string]*keySigner
	keyDER      map[string][]byte
	stores      memTrustStore
	storeSums   map[string][]string // "type:name" → hex SHA-256 of each certificate
	identities  map[string]*identitySigner
	identityCfg map[string]config.TrustIdentity
	trustedRoot root.TrustedMaterial
	rootSum     string
}

// loadMaterial reads every key, trust store, identity and the trusted root
// of the configuration.
func loadMaterial(cfg config.Trust) (*material, error) {
	m := &material{
		keys: map[string]*keySigner{}, keyDER: map[string][]byte{},
		stores: memTrustStore{}, storeSums: map[string][]string{},
		identities: map[string]*identitySigner{}, identityCfg: map[string]config.TrustIdentity{},
	}
	for _, k := range cfg.Keys {
		s, der, err := loadKey(k)
		if err != nil {
			return nil, err
		}
		m.keys[k.Name], m.keyDER[k.Name] = s, der
	}
	for _, s := range cfg.TrustStores {
		if err := m.addTrustStore(s); err != nil {
			return nil, err
		}
	}
	for _, id := range cfg.Identities {
		s, err := newIdentity(id, m.stores)
		if err != nil {
			return nil, err
		}
		m.identities[id.Name], m.identityCfg[id.Name] = s, id
	}
	if cfg.TrustedRootFile != "" {
		if err := m.loadTrustedRoot(cfg.TrustedRootFile); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// addTrustStore reads one trust store's certificates and their digests.
func (m *material) addTrustStore(s config.TrustStore) error {
	certs, err := loadTrustStore(s)
	if err != nil {
		return err
	}
	ref := s.Type + ":" + s.Name
	m.stores[ref] = certs
	for _, c := range certs {
		sum := sha256.Sum256(c.Raw)
		m.storeSums[ref] = append(m.storeSums[ref], hex.EncodeToString(sum[:]))
	}
	return nil
}

// loadTrustedRoot reads a Sigstore trusted_root.json and its digest.
func (m *material) loadTrustedRoot(file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("read trusted root: %w", err)
	}
	tr, err := root.NewTrustedRootFromJSON(data)
	if err != nil {
		return fmt.Errorf("trusted root %s: %w", file, err)
	}
	m.trustedRoot = tr
	sum := sha256.Sum256(data)
	m.rootSum = hex.EncodeToString(sum[:])
	return nil
}

// rule compiles one trust.policies entry (validated) over the material.
func (m *material) rule(p config.TrustPolicy) (*rule, error) {
	r := &rule{
		name:           p.Name,
		mode:           policy.Mode(p.Mode),
		requireAll:     p.Require == "all",
		signers:        append([]string(nil), p.Signers...),
		requireTlog:    p.RequireTransparencyLog,
		requireBinding: p.RequireRepositoryBinding,
	}
	if r.requireTlog {
		r.trustedRoot = m.trustedRoot
	}
	for _, name := range p.Signers {
		if k, ok := m.keys[name]; ok {
			r.keys = append(r.keys, k)
			continue
		}
		r.identities = append(r.identities, m.identities[name])
	}
	version, err := m.version(p)
	if err != nil {
		return nil, fmt.Errorf("policy %s: version: %w", p.Name, err)
	}
	r.version = version
	return r, nil
}

// version hashes the policy statement and every byte of trust material it
// depends on: it changes whenever either does.
func (m *material) version(p config.TrustPolicy) (string, error) {
	ver := struct {
		Policy     config.TrustPolicy
		Keys       map[string][]byte
		Identities map[string]config.TrustIdentity
		Stores     map[string][]string
		Root       string
	}{Policy: p, Keys: map[string][]byte{}, Identities: map[string]config.TrustIdentity{}, Stores: map[string][]string{}}
	for _, name := range p.Signers {
		if _, ok := m.keys[name]; ok {
			ver.Keys[name] = m.keyDER[name]
			continue
		}
		ver.Identities[name] = m.identityCfg[name]
		for _, ref := range m.identityCfg[name].TrustStores {
			ver.Stores[ref] = m.storeSums[ref]
		}
	}
	if p.RequireTransparencyLog {
		ver.Root = m.rootSum
	}
	data, err := json.Marshal(ver) // maps marshal with sorted keys
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
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
