package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"

	"github.com/portcullis/portcullis/auth/audit"
	"github.com/portcullis/portcullis/auth/token"
)

func newRobotsAPI(t *testing.T, auth Authorizer) (*Handler, *token.Robots, *bytes.Buffer) {
	t.Helper()
	robots, err := token.NewRobots(inmemory.New(), token.RobotsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var lines bytes.Buffer
	log, err := audit.New(&lines, audit.Options{Burst: -1})
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Options{Auth: auth, Robots: robots, Audit: log})
	if err != nil {
		t.Fatal(err)
	}
	return h, robots, &lines
}

func call(h http.Handler, method, path, body string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	var r *http.Request
	if body == "" {
		r = httptest.NewRequest(method, path, nil)
	} else {
		r = httptest.NewRequest(method, path, strings.NewReader(body))
	}
	h.ServeHTTP(rec, r)
	return rec
}

// TestRobotsAPI: an admin creates, lists and revokes robots; the secret is
// in the creation's answer only, never in a listing or an audit line.
func TestRobotsAPI(t *testing.T) {
	t.Parallel()
	auth := &fakeAuth{}
	h, robots, lines := newRobotsAPI(t, auth)
	ctx := context.Background()

	rec := call(h, http.MethodPost, "/api/v1/robots", `{"name":"ci","access":[{"repositories":["team/**"],"actions":["pull","push"]}],"expires":"720h"}`)
	if rec.Code != http.StatusCreated {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q", cc)
	}
	var created struct {
		Login, Secret string
		Robot         map[string]any
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &created); err != nil {
		t.Fatal(err)
	}
	if created.Login != "robot+ci" || !strings.HasPrefix(created.Secret, "pcr_") {
		t.Fatalf("created = %+v", created)
	}
	if _, ok := created.Robot["secretHash"]; ok {
		t.Errorf("the answer carries the secret's hash: %s", rec.Body)
	}
	if created.Robot["createdBy"] != "api:alice" {
		t.Errorf("createdBy = %v", created.Robot["createdBy"])
	}
	if _, err := robots.Authenticate(ctx, "ci", created.Secret); err != nil {
		t.Fatalf("the secret does not log in: %v", err)
	}

	rec = call(h, http.MethodGet, "/api/v1/robots", "")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"name":"ci"`) || strings.Contains(rec.Body.String(), "secret") {
		t.Errorf("list: %d %s", rec.Code, rec.Body)
	}

	rec = call(h, http.MethodPost, "/api/v1/robots", `{"name":"ci","access":[{"repositories":["team/**"],"actions":["pull"]}]}`)
	if code, _ := decodeError(t, rec.Body.Bytes()); rec.Code != http.StatusConflict || code != "DENIED" {
		t.Errorf("duplicate: %d %s", rec.Code, rec.Body)
	}

	rec = call(h, http.MethodDelete, "/api/v1/robots/ci", "")
	if rec.Code != http.StatusOK {
		t.Fatalf("revoke: %d %s", rec.Code, rec.Body)
	}
	if _, err := robots.Authenticate(ctx, "ci", created.Secret); !errors.Is(err, token.ErrBadCredentials) {
		t.Errorf("a revoked robot logs in: %v", err)
	}
	rec = call(h, http.MethodDelete, "/api/v1/robots/ci", "")
	if code, _ := decodeError(t, rec.Body.Bytes()); rec.Code != http.StatusNotFound || code != "NAME_UNKNOWN" {
		t.Errorf("revoke again: %d %s", rec.Code, rec.Body)
	}

	audited := lines.String()
	if strings.Contains(audited, created.Secret) || strings.Contains(audited, "pcr_") {
		t.Errorf("the audit log holds the secret:\n%s", audited)
	}
	for _, want := range []string{`"action":"create","repository":"robot+ci","result":"success"`, `"action":"revoke","repository":"robot+ci","result":"success"`,
		`"action":"revoke","repository":"robot+ci","result":"failure"`} {
		if !strings.Contains(audited, want) {
			t.Errorf("audit log lacks %s:\n%s", want, audited)
		}
	}
	if !strings.Contains(audited, `"kind":"admin","subject":"user:alice","addr":"192.0.2.1","action":"GET","repository":"/api/v1/robots","result":"allowed"`) {
		t.Errorf("the listing is not audited:\n%s", audited)
	}
	if !strings.Contains(audited, `"subject":"user:alice"`) {
		t.Errorf("audit lines do not name the caller:\n%s", audited)
	}
}

// TestRobotsAPIRefusals: who may not call it, and bad bodies.
func TestRobotsAPIRefusals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		auth     *fakeAuth
		method   string
		path     string
		body     string
		wantCode int
		want     string
	}{
		{"anonymous", &fakeAuth{err: challenge{}}, http.MethodGet, "/api/v1/robots", "", 401, "UNAUTHORIZED"},
		{"not an admin", &fakeAuth{err: errors.New("no")}, http.MethodPost, "/api/v1/robots", `{"name":"x"}`, 403, "DENIED"},
		{"token without the scope", &fakeAuth{err: fmt.Errorf("%w", scopeChallenge{})}, http.MethodDelete, "/api/v1/robots/x", "", 403, "DENIED"},
		{"not JSON", &fakeAuth{}, http.MethodPost, "/api/v1/robots", `name=x`, 400, "INVALID_REQUEST"},
		{"unknown field", &fakeAuth{}, http.MethodPost, "/api/v1/robots", `{"name":"x","secret":"mine"}`, 400, "INVALID_REQUEST"},
		{"no access", &fakeAuth{}, http.MethodPost, "/api/v1/robots", `{"name":"x"}`, 400, "INVALID_REQUEST"},
		{"bad name", &fakeAuth{}, http.MethodPost, "/api/v1/robots", `{"name":"X Y","access":[{"repositories":["a"],"actions":["pull"]}]}`, 400, "INVALID_REQUEST"},
		{"bad action", &fakeAuth{}, http.MethodPost, "/api/v1/robots", `{"name":"x","access":[{"repositories":["a"],"actions":["own"]}]}`, 400, "INVALID_REQUEST"},
		{"bad expiry", &fakeAuth{}, http.MethodPost, "/api/v1/robots", `{"name":"x","access":[{"repositories":["a"],"actions":["pull"]}],"expires":"soon"}`, 400, "INVALID_REQUEST"},
		{"huge body", &fakeAuth{}, http.MethodPost, "/api/v1/robots", `{"name":"` + strings.Repeat("x", 100<<10) + `"}`, 400, "INVALID_REQUEST"},
		{"long description", &fakeAuth{}, http.MethodPost, "/api/v1/robots", `{"name":"x","description":"` + strings.Repeat("d", 2000) + `","access":[{"repositories":["a"],"actions":["pull"]}]}`, 400, "INVALID_REQUEST"},
		{"PUT", &fakeAuth{}, http.MethodPut, "/api/v1/robots/x", "", 404, "UNSUPPORTED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, robots, _ := newRobotsAPI(t, tt.auth)
			rec := call(h, tt.method, tt.path, tt.body)
			code, msg := decodeError(t, rec.Body.Bytes())
			if rec.Code != tt.wantCode || code != tt.want {
				t.Errorf("%d %s %q, want %d %s", rec.Code, code, msg, tt.wantCode, tt.want)
			}
			if tt.wantCode == 403 && !strings.Contains(msg, "registry:admin:*") {
				t.Errorf("the refusal does not name the scope: %q", msg)
			}
			if list, _ := robots.List(context.Background()); len(list) != 0 {
				t.Errorf("a refused request stored a robot: %v", list)
			}
			if len(tt.auth.calls) != 1 || tt.auth.calls[0] != adminAccess {
				t.Errorf("authorized %v, want the admin scope", tt.auth.calls)
			}
		})
	}
}

// scopeChallenge is the controller's answer to a valid token that lacks
// the scope asked for.
type scopeChallenge struct{ challenge }

func (scopeChallenge) Unwrap() error { return token.ErrInsufficientScope }
