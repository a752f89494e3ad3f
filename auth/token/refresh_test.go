package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// TestRefreshRevocation checks that a refresh token works until it is
// revoked, by id, by user or all at once, and that a revoked one gets the
// normal failure answer.
func TestRefreshRevocation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	login := func(user string) string {
		t.Helper()
		s, r := e.postToken(url.Values{
			"grant_type": {"password"}, "username": {user}, "password": {testPasswords[user]}, "access_type": {"offline"},
		}, "")
		if s != http.StatusOK || r.RefreshToken == "" {
			t.Fatalf("login %s: %d %+v", user, s, r)
		}
		return r.RefreshToken
	}
	// Each refresh from its own address: revoked tokens count as failed
	// logins, and the rate limit is not what this test is about.
	calls := 0
	refresh := func(tok string) (int, tokenReply) {
		t.Helper()
		calls++
		return e.postToken(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok}, "scope": {"repository:team/app:pull"}}, fmt.Sprintf("192.0.2.%d", calls))
	}
	works := func(name, tok string) {
		t.Helper()
		if s, r := refresh(tok); s != http.StatusOK || r.AccessToken == "" {
			t.Errorf("%s: refresh %d %+v, want 200", name, s, r)
		}
	}
	revoked := func(name, tok string) {
		t.Helper()
		s, r := refresh(tok)
		if s != http.StatusUnauthorized || r.Error != "invalid_grant" || len(r.Errors) != 1 || r.Errors[0].Message != "invalid credentials" {
			t.Errorf("%s: refresh %d %+v, want 401 invalid_grant", name, s, r)
		}
	}

	a1, a2, b1 := login("alice"), login("alice"), login("bob")
	works("alice's first", a1)
	works("bob's", b1)

	// Listing shows who and when, never a secret.
	list, err := e.tokens.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := len(list); got != 3 {
		t.Fatalf("%d tokens listed, want 3", got)
	}
	raw, _ := json.Marshal(list)
	for _, tok := range []string{a1, a2, b1} {
		sig := tok[strings.LastIndexByte(tok, '.')+1:]
		if strings.Contains(string(raw), sig) || strings.Contains(string(raw), e.claimsOfRefresh(tok).Credential) {
			t.Errorf("listing shows a token or its credential: %s", raw)
		}
	}
	aliceList, err := e.tokens.List(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	want := []RefreshRecord{
		{ID: e.claimsOfRefresh(a1).ID, Subject: "alice", IssuedAt: e.clock.Now(), ExpiresAt: e.clock.Now().Add(7 * 24 * time.Hour)},
		{ID: e.claimsOfRefresh(a2).ID, Subject: "alice", IssuedAt: e.clock.Now(), ExpiresAt: e.clock.Now().Add(7 * 24 * time.Hour)},
	}
	less := func(x, y RefreshRecord) bool { return x.ID < y.ID }
	if diff := cmp.Diff(want, aliceList, cmpopts.SortSlices(less)); diff != "" {
		t.Errorf("alice's tokens (-want +got):\n%s", diff)
	}

	// Per id: only that token stops.
	if err := e.tokens.Revoke(ctx, e.claimsOfRefresh(a1).ID); err != nil {
		t.Fatal(err)
	}
	revoked("alice's first after revoking it", a1)
	works("alice's second after revoking the first", a2)
	if err := e.tokens.Revoke(ctx, e.claimsOfRefresh(a1).ID); !errors.Is(err, ErrRefreshNotFound) {
		t.Errorf("revoking twice: %v, want ErrRefreshNotFound", err)
	}

	// Per user: all of alice's stop, bob's works.
	a3 := login("alice")
	if n, err := e.tokens.RevokeSubject(ctx, "alice"); err != nil || n != 2 {
		t.Errorf("revoke alice: %d, %v; want 2", n, err)
	}
	revoked("alice's second after revoking alice", a2)
	revoked("alice's third after revoking alice", a3)
	works("bob's after revoking alice", b1)

	// All.
	a4 := login("alice")
	if n, err := e.tokens.RevokeSubject(ctx, ""); err != nil || n != 2 {
		t.Errorf("revoke all: %d, %v; want 2", n, err)
	}
	revoked("bob's after revoking all", b1)
	revoked("alice's fourth after revoking all", a4)
	if list, err := e.tokens.List(ctx, ""); err != nil || len(list) != 0 {
		t.Errorf("after revoking all: %v, %v", list, err)
	}

	// A robot's refresh tokens are recorded and revoked alike.
	_, secret, err := e.robots.Create(ctx, RobotSpec{Name: "ci", Access: []RobotGrant{{Repositories: []string{"team/**"}, Actions: []string{"pull"}}}})
	if err != nil {
		t.Fatal(err)
	}
	s, r := e.postToken(url.Values{"grant_type": {"password"}, "username": {"robot+ci"}, "password": {secret}, "access_type": {"offline"}}, "")
	if s != http.StatusOK || r.RefreshToken == "" {
		t.Fatalf("robot login: %d %+v", s, r)
	}
	works("robot's", r.RefreshToken)
	if n, err := e.tokens.RevokeSubject(ctx, "robot+ci"); err != nil || n != 1 {
		t.Errorf("revoke robot+ci: %d, %v; want 1", n, err)
	}
	revoked("robot's after revoking it", r.RefreshToken)

	// Expired records are pruned when listed.
	a5 := login("alice")
	e.clock.Advance(7*24*time.Hour + time.Minute)
	revoked("alice's after expiry", a5)
	if list, err := e.tokens.List(ctx, ""); err != nil || len(list) != 0 {
		t.Errorf("expired tokens listed: %v, %v", list, err)
	}
	if _, err := e.tokens.Get(ctx, e.claimsOfRefresh(a5).ID); !errors.Is(err, ErrRefreshNotFound) {
		t.Errorf("expired record kept: %v", err)
	}
}

// claimsOfRefresh returns a refresh token's claims without checking them.
func (e *env) claimsOfRefresh(tok string) *Claims {
	e.t.Helper()
	var c Claims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &c); err != nil {
		e.t.Fatalf("parse refresh token: %v", err)
	}
	return &c
}
