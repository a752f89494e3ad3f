package token

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/auth"
	"github.com/golang-jwt/jwt/v5"

	"github.com/portcullis/portcullis/auth/audit"
)

// FuzzAuthorize gives the access controller arbitrary Authorization
// headers: it must never panic and never grant. (The fuzzer cannot sign
// with the key made here, so any grant would be a forgery.)
func FuzzAuthorize(f *testing.F) {
	f.Add("Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJpc3MiOiJ4In0.")
	f.Add("Bearer a.b.c")
	f.Add("bearer ")
	f.Add("Basic YWxpY2U6cHc=")
	f.Add("Bearer eyJhbGciOiJIUzI1NiIsImtpZCI6IngifQ.e30.AAAA")
	f.Add("Bearer eyJhbGciOiJFUzI1NiIsImtpZCI6IngiLCJ0eXAiOiJKV1QifQ.eyJhY2Nlc3MiOlt7InR5cGUiOiJyZXBvc2l0b3J5IiwibmFtZSI6InRlYW0vYXBwIiwiYWN0aW9ucyI6WyJwdWxsIl19XX0.MEUCIQ")
	keys, err := NewKeySet(newKey(f))
	if err != nil {
		f.Fatal(err)
	}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ac, err := NewAccessController(keys, ControllerOptions{Issuer: testIssuer, Service: testService, Realm: "https://r.test/token", Now: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}
	access := auth.Access{Resource: auth.Resource{Type: "repository", Name: "team/app"}, Action: "pull"}
	f.Fuzz(func(t *testing.T, header string) {
		r := httptest.NewRequest(http.MethodGet, "/v2/team/app/manifests/x", nil)
		r.Header.Set("Authorization", header)
		if g, err := ac.Authorized(r, access); err == nil || g != nil {
			t.Fatalf("granted %+v for %q", g, header)
		}
		if _, err := ac.Authorize(r); err == nil {
			t.Fatalf("granted base access for %q", header)
		}
	})
}

func TestRSAKeys(t *testing.T) {
	t.Parallel()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := NewKeySet(rk)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOptions{keys: keys})
	tok := e.mustToken("alice", "repository:team/app:pull")
	if s, _ := e.registry(http.MethodGet, "/v2/team/app/manifests/v1", tok); s != http.StatusOK {
		t.Errorf("RS256 token: %d", s)
	}
	// An RS256 header on our EC kid (algorithm confusion) is refused.
	ec, err := NewKeySet(newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	e2 := newEnv(t, envOptions{keys: ec})
	now := e2.clock.Now()
	c := e2.svc.claims(e2.policy.User("alice"), now, now.Add(time.Minute))
	forged := forge(t, c, jwt.SigningMethodRS256, rk, ec.SigningKeyID())
	if s, _ := e2.registry(http.MethodGet, "/v2/", forged); s != http.StatusUnauthorized {
		t.Errorf("RS256 on an EC kid: %d", s)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewKeySet(small); err == nil {
		t.Error("1024-bit RSA key accepted")
	}
}

// FuzzTokenRequest gives the token endpoint arbitrary credentials and
// scopes: it must never panic, never issue a token for a wrong password,
// and never write an audit line longer than its bound.
func FuzzTokenRequest(f *testing.F) {
	f.Add("alice", "nope", "repository:team/app:pull")
	f.Add("robot+ci", "pcr_x", "repository:team/app:pull,push registry:catalog:*")
	f.Add(strings.Repeat("u", 2000), "pw", "")
	f.Add("alice", strings.Repeat("p", 2000), strings.Repeat("repository:a:pull ", 70))
	e := newEnv(f, envOptions{audit: audit.Options{Burst: -1}})
	f.Fuzz(func(t *testing.T, user, pass, scope string) {
		form := url.Values{"grant_type": {"password"}, "username": {user}, "password": {pass}, "scope": {scope}}
		r := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		e.svc.ServeHTTP(w, r)
		if w.Code == http.StatusOK && (testPasswords[user] == "" || testPasswords[user] != pass) {
			t.Fatalf("token issued for %q/%q", user, pass)
		}
		e.audit.mu.Lock()
		defer e.audit.mu.Unlock()
		for _, line := range bytes.Split(e.audit.buf.Bytes(), []byte("\n")) {
			if len(line) > 24<<10 {
				t.Fatalf("audit line of %d bytes", len(line))
			}
		}
		e.audit.buf.Reset()
	})
}
