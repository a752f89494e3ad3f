package trust_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/trust"
)

// TestExample decodes example.yml strictly, as config.Load would.
func TestExample(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("example.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Trust config.Trust `yaml:"trust"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	doc.Trust.Provision()
	if errs := doc.Trust.Validate("trust"); len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	if len(doc.Trust.Policies) != 1 || doc.Trust.Policies[0].Require != "any" {
		t.Errorf("decoded %+v", doc.Trust)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	valid := func() config.Trust {
		return config.Trust{
			Keys:        []config.TrustKey{{Name: "k", File: "k.pub"}},
			TrustStores: []config.TrustStore{{Name: "s", Files: []string{"s.pem"}}},
			Identities:  []config.TrustIdentity{{Name: "i", TrustStores: []string{"ca:s"}, TrustedIdentities: []string{"*"}}},
			Policies:    []config.TrustPolicy{{Repositories: []string{"team/**"}, Signers: []string{"k", "i"}}},
		}
	}
	tests := []struct {
		name   string
		mutate func(*config.Trust)
		want   []string
	}{
		{"valid", func(*config.Trust) {}, nil},
		{"zero", func(c *config.Trust) { *c = config.Trust{} }, nil},
		{"duplicate signer", func(c *config.Trust) { c.Identities[0].Name = "k" }, []string{"trust.identities[0].name: duplicate signer name", "trust.policies[0].signers[1]: unknown signer"}},
		{"key without file", func(c *config.Trust) { c.Keys[0].File = "" }, []string{"trust.keys[0].file: required"}},
		{"bad store type", func(c *config.Trust) { c.TrustStores[0].Type = "root" }, []string{"trust.trustStores[0].type", "trust.identities[0].trustStores[0]: unknown trust store"}},
		{"store reference", func(c *config.Trust) { c.Identities[0].TrustStores = []string{"s"} }, []string{"want TYPE:NAME"}},
		{"identity syntax", func(c *config.Trust) { c.Identities[0].TrustedIdentities = []string{"CN=x"} }, []string{"trust.identities[0].trustedIdentities[0]"}},
		{"revocation", func(c *config.Trust) { c.Identities[0].Revocation = "maybe" }, []string{"trust.identities[0].revocation"}},
		{"mode", func(c *config.Trust) { c.Policies[0].Mode = "block" }, []string{"trust.policies[0].mode"}},
		{"require", func(c *config.Trust) { c.Policies[0].Require = "most" }, []string{"trust.policies[0].require"}},
		{"pattern", func(c *config.Trust) { c.Policies[0].Repositories = []string{"team/a**"} }, []string{"trust.policies[0].repositories[0]"}},
		{"no signers", func(c *config.Trust) { c.Policies[0].Signers = nil }, []string{"trust.policies[0].signers: required"}},
		{"audit needs no signers", func(c *config.Trust) { c.Policies[0].Signers, c.Policies[0].Mode = nil, "audit" }, nil},
		{"tlog without root", func(c *config.Trust) { c.Policies[0].RequireTransparencyLog = true }, []string{"needs trust.trustedRootFile"}},
		{"negative cache", func(c *config.Trust) { c.CacheSize = -1 }, []string{"trust.cacheSize"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			tt.mutate(&c)
			c.Provision()
			errs := c.Validate("trust")
			if len(errs) != len(tt.want) {
				t.Fatalf("got %v, want %d errors %q", errs, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(errs[i].Error(), w) {
					t.Errorf("error %d: %v, want %q", i, errs[i], w)
				}
			}
		})
	}
}

// TestNewKeyMaterial checks what New accepts from key and certificate files.
func TestNewKeyMaterial(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pubPEM := func(pub any) []byte {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	good := write("good.pub", pubPEM(&ec.PublicKey))
	tests := []struct {
		name string
		key  string
		cert string
		want string
	}{
		{"ok", good, filepath.Join("testdata", "alpha.crt"), ""},
		{"missing key", filepath.Join(dir, "nope.pub"), filepath.Join("testdata", "alpha.crt"), "read key k"},
		{"not PEM", write("junk.pub", []byte("junk")), filepath.Join("testdata", "alpha.crt"), "key k"},
		{"weak RSA", write("weak.pub", pubPEM(&weak.PublicKey)), filepath.Join("testdata", "alpha.crt"), "want at least 2048"},
		{"no certificates", good, write("empty.pem", nil), "no PEM certificates"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := config.Trust{
				Keys:        []config.TrustKey{{Name: "k", File: tt.key}},
				TrustStores: []config.TrustStore{{Name: "s", Files: []string{tt.cert}}},
				Identities:  []config.TrustIdentity{{Name: "i", TrustStores: []string{"ca:s"}, TrustedIdentities: []string{"*"}}},
				Policies:    []config.TrustPolicy{{Repositories: []string{"team/**"}, Signers: []string{"k", "i"}}},
			}
			_, err := trust.New(cfg, newMemContent(), trust.Options{})
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}

// TestPolicyVersion: the version changes with the policy and with the key
// material, not with unrelated policies.
func TestPolicyVersion(t *testing.T) {
	t.Parallel()
	cfg := config.Trust{
		Keys: []config.TrustKey{{Name: "release", File: filepath.Join("testdata", "release.pub")}},
		Policies: []config.TrustPolicy{
			{Name: "a", Repositories: []string{"a/**"}, Signers: []string{"release"}},
			{Name: "b", Repositories: []string{"b/**"}, Signers: []string{"release"}},
		},
	}
	version := func(c config.Trust, repo string) string {
		t.Helper()
		v, err := trust.New(c, newMemContent(), trust.Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, ver, _, ok := v.Policy(repo)
		if !ok {
			t.Fatalf("no policy for %s", repo)
		}
		return ver
	}
	base := version(cfg, "a/x")
	if again := version(cfg, "a/x"); again != base {
		t.Errorf("version not stable: %s, %s", base, again)
	}
	changedB := cfg
	changedB.Policies = []config.TrustPolicy{cfg.Policies[0], {Name: "b", Repositories: []string{"b/**"}, Signers: []string{"release"}, Mode: "audit"}}
	if got := version(changedB, "a/x"); got != base {
		t.Errorf("changing policy b changed a's version")
	}
	changedA := cfg
	changedA.Policies = []config.TrustPolicy{{Name: "a", Repositories: []string{"a/**"}, Signers: []string{"release"}, Require: "all"}, cfg.Policies[1]}
	if got := version(changedA, "a/x"); got == base {
		t.Errorf("changing policy a kept its version")
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	other := filepath.Join(t.TempDir(), "other.pub")
	if err := os.WriteFile(other, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	rotated := cfg
	rotated.Keys = []config.TrustKey{{Name: "release", File: other}}
	if got := version(rotated, "a/x"); got == base {
		t.Errorf("rotating the key kept the version")
	}
}
