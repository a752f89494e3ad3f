package token

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/portcullis/portcullis/auth/audit"
)

func TestLoginFlows(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})

	// GET with Basic credentials, as docker login and pull do.
	status, r := e.getToken("alice", "alice-password", "", url.Values{
		"scope": {"repository:team/app:pull,push"}, "offline_token": {"true"}, "client_id": {"docker"}, "account": {"alice"},
	})
	if status != http.StatusOK {
		t.Fatalf("GET: status %d %+v", status, r)
	}
	if r.Token == "" || r.Token != r.AccessToken || r.ExpiresIn != 300 || r.RefreshToken == "" {
		t.Fatalf("GET answer %+v", r.tokenResponse)
	}
	if r.IssuedAt != e.clock.Now().Format(time.RFC3339) {
		t.Errorf("issued_at %q", r.IssuedAt)
	}
	c := e.claimsOf(r.Token)
	if diff := cmp.Diff([]ResourceActions{{Type: "repository", Name: "team/app", Actions: []string{"pull", "push"}}}, c.Access); diff != "" {
		t.Errorf("access (-want +got):\n%s", diff)
	}
	if c.Subject != "alice" || c.Kind != "user" || !cmp.Equal(c.Groups, []string{"devs"}) || c.ID == "" {
		t.Errorf("claims %+v", c)
	}
	if got := c.ExpiresAt.Sub(c.IssuedAt.Time); got != 5*time.Minute {
		t.Errorf("lifetime %s", got)
	}
	if s, _ := e.registry(http.MethodPut, "/v2/team/app/manifests/latest", r.Token); s != http.StatusOK {
		t.Errorf("push with token: %d", s)
	}
	// The same token, now remembered as verified, still expires.
	e.clock.Advance(5*time.Minute + 31*time.Second)
	if s, h := e.registry(http.MethodGet, "/v2/team/app/manifests/latest", r.Token); s != http.StatusUnauthorized || !strings.Contains(h, "invalid_token") {
		t.Errorf("expired cached token: %d %q", s, h)
	}

	// POST password grant (OAuth2), offline for a refresh token.
	status, p := e.postToken(url.Values{
		"grant_type": {"password"}, "username": {"alice"}, "password": {"alice-password"},
		"client_id": {"crane"}, "access_type": {"offline"}, "scope": {"repository:team/app:pull repository:team/lib:pull"}, "service": {testService},
	}, "")
	if status != http.StatusOK || p.AccessToken == "" || p.RefreshToken == "" {
		t.Fatalf("POST password: %d %+v", status, p)
	}
	if p.Scope != "repository:team/app:pull repository:team/lib:pull" {
		t.Errorf("scope %q", p.Scope)
	}

	// POST refresh_token grant: a new access token, for a new scope.
	e.clock.Advance(time.Hour)
	status, f := e.postToken(url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {p.RefreshToken}, "client_id": {"crane"}, "scope": {"repository:team/other:push"},
	}, "")
	if status != http.StatusOK || f.AccessToken == "" || f.RefreshToken != "" {
		t.Fatalf("POST refresh: %d %+v", status, f)
	}
	if got := e.claimsOf(f.AccessToken); got.Subject != "alice" || len(got.Access) != 1 || got.Access[0].Name != "team/other" {
		t.Errorf("refreshed claims %+v", got)
	}
	// A refresh token is no access token.
	if s, h := e.registry(http.MethodGet, "/v2/", p.RefreshToken); s != http.StatusUnauthorized || !strings.Contains(h, `error="invalid_token"`) {
		t.Errorf("refresh token as bearer: %d %q", s, h)
	}
	// An access token is no refresh token.
	if s, _ := e.postToken(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {f.AccessToken}}, ""); s != http.StatusUnauthorized {
		t.Errorf("access token as refresh token: %d", s)
	}

	// Docker's first request: GET /v2/ without a token gets the challenge.
	s, h := e.registry(http.MethodGet, "/v2/", "")
	want := `Bearer realm="` + e.srv.URL + `/token",service="registry.test"`
	if s != http.StatusUnauthorized || h != want {
		t.Errorf("challenge: %d %q, want %q", s, h, want)
	}
	s, h = e.registry(http.MethodGet, "/v2/team/app/manifests/latest", "")
	if want := want + `,scope="repository:team/app:pull"`; h != want {
		t.Errorf("challenge %q, want %q", h, want)
	}
	_ = s
}

func TestScopes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	tests := []struct {
		name  string
		user  string
		scope []string
		want  []ResourceActions
	}{
		{"intersection", "bob", []string{"repository:team/app:pull,push,delete"}, []ResourceActions{{Type: "repository", Name: "team/app", Actions: []string{"pull"}}}},
		{"nothing allowed is left out", "alice", []string{"repository:secret/x:pull", "repository:team/x:pull"}, []ResourceActions{{Type: "repository", Name: "team/x", Actions: []string{"pull"}}}},
		{"repeated scopes merge", "alice", []string{"repository:team/x:pull", "repository:team/x:push"}, []ResourceActions{{Type: "repository", Name: "team/x", Actions: []string{"pull", "push"}}}},
		{"catalog for admins", "root", []string{"registry:catalog:*"}, []ResourceActions{{Type: "registry", Name: "catalog", Actions: []string{"*"}}}},
		{"no catalog for devs", "alice", []string{"registry:catalog:*"}, []ResourceActions{}},
		{"admin for admins", "root", []string{"registry:admin:*"}, []ResourceActions{{Type: "registry", Name: "admin", Actions: []string{"*"}}}},
		{"no admin for devs", "alice", []string{"registry:admin:*"}, []ResourceActions{}},
		{"never admin when anonymous", "", []string{"registry:admin:*"}, []ResourceActions{}},
		{"admin only as *", "root", []string{"registry:admin:pull"}, []ResourceActions{}},
		{"unknown actions ignored", "root", []string{"repository:a/b:pull,fly"}, []ResourceActions{{Type: "repository", Name: "a/b", Actions: []string{"pull"}}}},
		{"star is every action", "root", []string{"repository:a/b:*"}, []ResourceActions{{Type: "repository", Name: "a/b", Actions: []string{"pull", "push", "delete"}}}},
		{"anonymous", "", []string{"repository:public/x:pull,push", "repository:team/x:pull"}, []ResourceActions{{Type: "repository", Name: "public/x", Actions: []string{"pull"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, r := e.getToken(tt.user, testPasswords[tt.user], "", scopes(tt.scope...))
			if status != http.StatusOK {
				t.Fatalf("status %d %+v", status, r)
			}
			if diff := cmp.Diff(tt.want, e.claimsOf(r.Token).Access, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("access (-want +got):\n%s", diff)
			}
		})
	}

	// Using more than was granted: bob's pull-only token on a push.
	tok := e.mustToken("bob", "repository:team/app:pull,push")
	if s, h := e.registry(http.MethodPut, "/v2/team/app/manifests/v1", tok); s != http.StatusUnauthorized ||
		h != `Bearer realm="`+e.srv.URL+`/token",service="registry.test",scope="repository:team/app:pull,push",error="insufficient_scope"` {
		t.Errorf("push with pull token: %d %q", s, h)
	}
	if s, _ := e.registry(http.MethodGet, "/v2/team/app/manifests/v1", tok); s != http.StatusOK {
		t.Errorf("pull with pull token: %d", s)
	}
	// A token for repository A used on B.
	if s, h := e.registry(http.MethodGet, "/v2/team/other/manifests/v1", tok); s != http.StatusUnauthorized || !strings.Contains(h, `error="insufficient_scope"`) {
		t.Errorf("token for A on B: %d %q", s, h)
	}
	if s, _ := e.registry(http.MethodGet, "/v2/_catalog", e.mustToken("root", "registry:catalog:*")); s != http.StatusOK {
		t.Errorf("catalog: %d", s)
	}

	// The denials are audited with the rule that made them.
	var denied []audit.Event
	for _, ev := range e.audit.events(t) {
		if ev.Kind == audit.KindDecision && ev.Result == audit.ResultDenied && ev.Subject == "user:bob" && ev.Action == "push" {
			denied = append(denied, ev)
		}
	}
	if len(denied) == 0 || denied[0].Rule != "bob-readonly" || denied[0].Repository != "team/app" {
		t.Errorf("bob's push denial not audited with its rule: %+v", denied)
	}
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	tests := []struct {
		name   string
		do     func() (int, tokenReply)
		status int
		code   string
	}{
		{"wrong password", func() (int, tokenReply) { return e.getToken("alice", "nope", "", nil) }, 401, "invalid_grant"},
		{"unknown user", func() (int, tokenReply) { return e.getToken("zed", "nope", "", nil) }, 401, "invalid_grant"},
		{"account mismatch", func() (int, tokenReply) {
			return e.getToken("alice", "alice-password", "", url.Values{"account": {"bob"}})
		}, 400, "invalid_request"},
		{"wrong service", func() (int, tokenReply) {
			return e.postToken(url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"alice-password"}, "service": {"other"}}, "")
		}, 400, "invalid_request"},
		{"malformed scope", func() (int, tokenReply) { return e.getToken("", "", "", scopes("repository:Bad Name:pull")) }, 400, "invalid_scope"},
		{"unknown grant", func() (int, tokenReply) { return e.postToken(url.Values{"grant_type": {"client_credentials"}}, "") }, 400, "unsupported_grant_type"},
		{"garbage refresh", func() (int, tokenReply) {
			return e.postToken(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x.y.z"}}, "")
		}, 401, "invalid_grant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, r := tt.do()
			if status != tt.status || r.Error != tt.code || len(r.Errors) != 1 {
				t.Errorf("got %d %+v, want %d %s", status, r, tt.status, tt.code)
			}
			if strings.Contains(r.Errors[0].Message, "password") && tt.status == 401 && r.Errors[0].Message != "invalid credentials" {
				t.Errorf("message %q says too much", r.Errors[0].Message)
			}
		})
	}
	// Wrong user and wrong password look the same.
	_, a := e.getToken("alice", "nope", "", nil)
	_, b := e.getToken("zed", "nope", "", nil)
	if diff := cmp.Diff(a, b, cmp.AllowUnexported(tokenReply{})); diff != "" {
		t.Errorf("unknown user distinguishable from wrong password:\n%s", diff)
	}
	// Nothing secret reaches the audit log.
	for _, ev := range e.audit.events(t) {
		for _, s := range []string{ev.Reason, ev.Subject, ev.Rule} {
			if strings.Contains(s, "nope") || strings.Contains(s, "alice-password") {
				t.Errorf("audit line leaks a password: %+v", ev)
			}
		}
	}
}

func TestRobots(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	robot, secret, err := e.robots.Create(ctx, RobotSpec{
		Name: "release", Access: []RobotGrant{{Repositories: []string{"team/**"}, Actions: []string{"pull", "push"}}},
		Lifetime: 24 * time.Hour, CreatedBy: "root",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, "pcr_") || strings.Contains(robot.SecretHash, secret) {
		t.Fatalf("secret %q / hash %q", secret, robot.SecretHash)
	}
	if _, _, err := e.robots.Create(ctx, RobotSpec{Name: "release", Access: robot.Access}); !errors.Is(err, ErrRobotExists) {
		t.Errorf("duplicate create: %v", err)
	}
	list, err := e.robots.List(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "release" {
		t.Fatalf("List = %+v, %v", list, err)
	}

	// Use: the robot gets its scope, nothing outside it.
	status, r := e.getToken("robot+release", secret, "", url.Values{
		"scope": {"repository:team/app:pull,push,delete", "repository:other/x:pull"}, "offline_token": {"true"},
	})
	if status != http.StatusOK {
		t.Fatalf("robot login: %d %+v", status, r)
	}
	c := e.claimsOf(r.Token)
	if diff := cmp.Diff([]ResourceActions{{Type: "repository", Name: "team/app", Actions: []string{"pull", "push"}}}, c.Access); diff != "" {
		t.Errorf("robot access (-want +got):\n%s", diff)
	}
	if c.Subject != "robot+release" || c.Kind != "robot" {
		t.Errorf("claims %+v", c)
	}
	if s, _ := e.registry(http.MethodPut, "/v2/team/app/manifests/v1", r.Token); s != http.StatusOK {
		t.Errorf("robot push: %d", s)
	}
	if s, _ := e.getToken("robot+release", secret+"x", "", nil); s != http.StatusUnauthorized {
		t.Errorf("wrong robot secret: %d", s)
	}

	// Revoke: the secret and the refresh token stop working at once.
	if err := e.robots.Revoke(ctx, "release"); err != nil {
		t.Fatal(err)
	}
	if s, _ := e.getToken("robot+release", secret, "", nil); s != http.StatusUnauthorized {
		t.Errorf("revoked robot login: %d", s)
	}
	if s, _ := e.postToken(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {r.RefreshToken}}, ""); s != http.StatusUnauthorized {
		t.Errorf("revoked robot refresh: %d", s)
	}
	if err := e.robots.Revoke(ctx, "release"); !errors.Is(err, ErrRobotNotFound) {
		t.Errorf("second revoke: %v", err)
	}

	// Expiry.
	_, secret, err = e.robots.Create(ctx, RobotSpec{Name: "ci", Access: []RobotGrant{{Repositories: []string{"ci/*"}, Actions: []string{"pull"}}}, Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := e.getToken("robot+ci", secret, "", nil); s != http.StatusOK {
		t.Errorf("fresh robot: %d", s)
	}
	e.clock.Advance(time.Hour)
	if s, _ := e.getToken("robot+ci", secret, "", nil); s != http.StatusUnauthorized {
		t.Errorf("expired robot: %d", s)
	}

	var failures int
	for _, ev := range e.audit.events(t) {
		if ev.Kind == audit.KindAuthentication && ev.Result == audit.ResultFailure && strings.HasPrefix(ev.Subject, "robot:") {
			failures++
		}
	}
	if failures != 3 {
		t.Errorf("audited robot login failures = %d, want 3 (wrong secret, revoked, expired)", failures)
	}
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	// Every attempt audited, to count them.
	e := newEnv(t, envOptions{audit: audit.Options{Burst: -1}})
	const attacker, home = "203.0.113.7", "198.51.100.1"
	for i := range 1000 {
		status, _ := e.getToken("alice", "guess-"+string(rune('a'+i%26)), attacker, nil)
		if status != http.StatusUnauthorized && status != http.StatusTooManyRequests {
			t.Fatalf("attempt %d: status %d", i, status)
		}
	}
	// The limit holds: even the right password from the attacker's address.
	if s, _ := e.getToken("alice", "alice-password", attacker, nil); s != http.StatusTooManyRequests {
		t.Errorf("right password from locked address: %d", s)
	}
	// The real user, from another address, still gets in.
	if s, _ := e.getToken("alice", "alice-password", home, nil); s != http.StatusOK {
		t.Errorf("real user from home: %d", s)
	}
	// Only the attempts that were evaluated count: five failures, the rest locked.
	var failed, locked int
	for _, ev := range e.audit.events(t) {
		if ev.Kind == audit.KindAuthentication && ev.Addr == attacker {
			switch ev.Result {
			case audit.ResultFailure:
				failed++
			case audit.ResultLocked:
				locked++
			}
		}
	}
	if failed != 5 || locked != 996 {
		t.Errorf("audited %d failures and %d locked attempts, want 5 and 996", failed, locked)
	}

	// A distributed attack (five guesses from each of four more addresses)
	// locks the user, but not on the address where the user logged in before.
	for i := range 20 {
		if s, _ := e.getToken("alice", "guess", "203.0.113."+string(rune('a'+i/5)), nil); s != http.StatusUnauthorized {
			t.Errorf("distributed guess %d: %d", i, s)
		}
	}
	if s, _ := e.getToken("alice", "alice-password", home, nil); s != http.StatusOK {
		t.Errorf("real user from trusted address under attack: %d", s)
	}
	if s, _ := e.getToken("alice", "alice-password", "192.0.2.99", nil); s != http.StatusTooManyRequests {
		t.Errorf("locked user from a new address: %d", s)
	}
}
