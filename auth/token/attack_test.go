package token

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/portcullis/portcullis/auth/audit"
)

// forge signs claims with any method, key and kid.
func forge(t *testing.T, claims *Claims, method jwt.SigningMethod, key any, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAttacksRejected(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	signer := e.keys.signer
	kid := e.keys.SigningKeyID()
	pubDER, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	stranger := newKey(t)
	strangerKeys, err := NewKeySet(stranger)
	if err != nil {
		t.Fatal(err)
	}

	// valid returns the claims of a token that would be accepted.
	valid := func() *Claims {
		now := e.clock.Now()
		c := e.svc.claims(e.policy.User("alice"), now, now.Add(5*time.Minute))
		c.Access = []ResourceActions{{Type: "repository", Name: "team/app", Actions: []string{"pull"}}}
		return c
	}
	with := func(f func(*Claims)) *Claims { c := valid(); f(c); return c }
	good := forge(t, valid(), jwt.SigningMethodES256, signer, kid)

	tests := []struct {
		name  string
		token func() string
		path  string
		want  string // the challenge's error parameter
	}{
		{"control: valid token", func() string { return good }, "/v2/team/app/manifests/v1", ""},
		{"alg none", func() string { return forge(t, valid(), jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid) }, "", "invalid_token"},
		{"HS256 keyed with the public key", func() string { return forge(t, valid(), jwt.SigningMethodHS256, pubPEM, kid) }, "", "invalid_token"},
		{"HS256 keyed with the DER public key", func() string { return forge(t, valid(), jwt.SigningMethodHS256, pubDER, kid) }, "", "invalid_token"},
		{"unknown kid", func() string { return forge(t, valid(), jwt.SigningMethodES256, stranger, strangerKeys.SigningKeyID()) }, "", "invalid_token"},
		{"our kid, foreign key", func() string { return forge(t, valid(), jwt.SigningMethodES256, stranger, kid) }, "", "invalid_token"},
		{"no kid", func() string { return forge(t, valid(), jwt.SigningMethodES256, signer, "") }, "", "invalid_token"},
		{"expired", func() string {
			return forge(t, with(func(c *Claims) {
				c.ExpiresAt = jwt.NewNumericDate(e.clock.Now().Add(-31 * time.Second))
				c.IssuedAt = jwt.NewNumericDate(e.clock.Now().Add(-10 * time.Minute))
				c.NotBefore = c.IssuedAt
			}), jwt.SigningMethodES256, signer, kid)
		}, "", "invalid_token"},
		{"nbf in the future", func() string {
			return forge(t, with(func(c *Claims) { c.NotBefore = jwt.NewNumericDate(e.clock.Now().Add(time.Minute)) }), jwt.SigningMethodES256, signer, kid)
		}, "", "invalid_token"},
		{"iat in the future", func() string {
			return forge(t, with(func(c *Claims) { c.IssuedAt = jwt.NewNumericDate(e.clock.Now().Add(time.Minute)) }), jwt.SigningMethodES256, signer, kid)
		}, "", "invalid_token"},
		{"no exp", func() string {
			return forge(t, with(func(c *Claims) { c.ExpiresAt = nil }), jwt.SigningMethodES256, signer, kid)
		}, "", "invalid_token"},
		{"no nbf", func() string {
			return forge(t, with(func(c *Claims) { c.NotBefore = nil }), jwt.SigningMethodES256, signer, kid)
		}, "", "invalid_token"},
		{"wrong aud", func() string {
			return forge(t, with(func(c *Claims) { c.Audience = jwt.ClaimStrings{"other.registry"} }), jwt.SigningMethodES256, signer, kid)
		}, "", "invalid_token"},
		{"wrong iss", func() string {
			return forge(t, with(func(c *Claims) { c.Issuer = "evil" }), jwt.SigningMethodES256, signer, kid)
		}, "", "invalid_token"},
		{"refresh token as access token", func() string {
			return forge(t, with(func(c *Claims) { c.Use = useRefresh }), jwt.SigningMethodES256, signer, kid)
		}, "", "invalid_token"},
		{"tampered payload", func() string {
			parts := strings.Split(good, ".")
			payload, err := base64.RawURLEncoding.DecodeString(parts[1])
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(payload, &m); err != nil {
				t.Fatal(err)
			}
			m["access"] = []any{map[string]any{"type": "repository", "name": "team/app", "actions": []string{"pull", "push"}}}
			payload, _ = json.Marshal(m)
			parts[1] = base64.RawURLEncoding.EncodeToString(payload)
			return strings.Join(parts, ".")
		}, "/v2/team/app/manifests/v1?push", "invalid_token"},
		{"token for A used on B", func() string { return good }, "/v2/team/other/manifests/v1", "insufficient_scope"},
		{"more scope than granted", func() string { return good }, "/v2/team/app/manifests/v1?push", "insufficient_scope"},
		{"garbage", func() string { return "not-a-token" }, "", "invalid_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, method := tt.path, http.MethodGet
			if path == "" {
				path = "/v2/team/app/manifests/v1"
			}
			if p, ok := strings.CutSuffix(path, "?push"); ok {
				path, method = p, http.MethodPut
			}
			before := len(e.audit.events(t))
			status, challenge := e.registry(method, path, tt.token())
			if tt.want == "" {
				if status != http.StatusOK {
					t.Fatalf("control rejected: %d %q", status, challenge)
				}
				return
			}
			if status != http.StatusUnauthorized || !strings.Contains(challenge, `error="`+tt.want+`"`) || !strings.HasPrefix(challenge, `Bearer realm="`) {
				t.Errorf("got %d %q, want 401 with error=%q", status, challenge, tt.want)
			}
			events := e.audit.events(t)[before:]
			if len(events) != 1 || events[0].Kind != audit.KindDecision || events[0].Result != audit.ResultDenied {
				t.Errorf("audit after attack: %+v", events)
			}
		})
	}
}

func TestKeyRotation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	oldFile, newFile := filepath.Join(dir, "old.pem"), filepath.Join(dir, "new.pem")
	for _, f := range []string{oldFile, newFile} {
		if err := GenerateKeyFile(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := GenerateKeyFile(oldFile); !os.IsExist(err) && !strings.Contains(err.Error(), "exists") {
		t.Errorf("GenerateKeyFile over an existing file: %v", err)
	}
	if fi, err := os.Stat(oldFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v %v", fi, err)
	}
	oldKeys, err := LoadKeySet(oldFile)
	if err != nil {
		t.Fatal(err)
	}
	before := newEnv(t, envOptions{keys: oldKeys})
	tok := before.mustToken("alice", "repository:team/app:pull")

	// Rotated: the new key signs, the old one still verifies.
	rotated, err := LoadKeySet(newFile, oldFile)
	if err != nil {
		t.Fatal(err)
	}
	after := newEnv(t, envOptions{keys: rotated})
	if s, _ := after.registry(http.MethodGet, "/v2/team/app/manifests/v1", tok); s != http.StatusOK {
		t.Errorf("old token after rotation: %d", s)
	}
	fresh := after.mustToken("alice", "repository:team/app:pull")
	if kid := headerKID(t, fresh); kid != rotated.SigningKeyID() || kid == oldKeys.SigningKeyID() {
		t.Errorf("new token kid %q", kid)
	}
	// Retired: the old key is gone.
	retired, err := LoadKeySet(newFile)
	if err != nil {
		t.Fatal(err)
	}
	last := newEnv(t, envOptions{keys: retired})
	if s, _ := last.registry(http.MethodGet, "/v2/team/app/manifests/v1", tok); s != http.StatusUnauthorized {
		t.Errorf("old token after retirement: %d", s)
	}
}

func headerKID(t *testing.T, tok string) string {
	t.Helper()
	h, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Kid string `json:"kid"`
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(h, &m); err != nil {
		t.Fatal(err)
	}
	return m.Kid
}
