package auth

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/portcullis/portcullis/config"
)

const testHash = "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy" // bcrypt form, 60 characters

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	valid := func() config.Auth {
		a := config.Auth{
			Enabled: true,
			Token:   config.AuthToken{SigningKeyFile: "/keys/signing.pem"},
			Users:   []config.AuthUser{{Name: "alice", PasswordHash: testHash}, {Name: "ci", PasswordFile: "/secrets/ci"}},
			Groups:  []config.AuthGroup{{Name: "devs", Members: []string{"alice"}}},
			Rules: []config.AccessRule{
				{Subjects: []string{"group:devs"}, Repositories: []string{"team/**"}, Actions: []string{"pull", "push"}},
			},
			TagRules: []config.TagRule{{Tags: []string{"v*"}, Immutable: true}},
		}
		a.Provision()
		return a
	}
	tests := []struct {
		name   string
		modify func(*config.Auth)
		want   []string
	}{
		{name: "valid", modify: func(*config.Auth) {}},
		{name: "zero value is disabled and valid", modify: func(a *config.Auth) { *a = config.Auth{} }},
		{name: "disabled with rules", modify: func(a *config.Auth) { a.Enabled = false }, want: []string{
			"auth.groups: set, but auth.enabled is false: every client would have full access",
			"auth.rules: set, but auth.enabled is false: every client would have full access",
			"auth.tagRules: set, but auth.enabled is false: every client would have full access",
			"auth.users: set, but auth.enabled is false: every client would have full access",
		}},
		{name: "every problem", modify: func(a *config.Auth) {
			a.Token.SigningKeyFile = ""
			a.Token.Lifetime = config.Duration(0)
			a.Token.Realm = "token.example.com"
			a.Users = append(a.Users, config.AuthUser{Name: "alice", PasswordHash: "hunter2"}, config.AuthUser{Name: "robot+x", PasswordFile: "f"})
			a.Groups[0].Members = append(a.Groups[0].Members, "nobody")
			a.Rules = append(a.Rules,
				config.AccessRule{Subjects: []string{"team:x"}, Repositories: []string{"a//b"}, Actions: []string{"pul"}},
				config.AccessRule{Subjects: []string{"anonymous"}, Repositories: []string{"**"}, Actions: []string{"push"}, Effect: "maybe"},
				config.AccessRule{Subjects: []string{"group:ghosts"}, Repositories: []string{"x"}, Actions: []string{"pull"}},
			)
			a.TagRules = append(a.TagRules, config.TagRule{Tags: []string{"["}, Create: []string{"robot:r"}}, config.TagRule{Tags: []string{"x"}})
			a.RateLimit.MaxBackoff = config.Duration(1)
			a.Admins = []string{"group:devs", "anonymous", "group:ghosts"}
		}, want: []string{
			`auth.token.realm: must be an absolute http or https URL`,
			`auth.token.lifetime: must be between 1s and 24h, got 0s`,
			`auth.token.signingKeyFile: required (create one with: registry auth keygen FILE)`,
			`auth.users[2].name: duplicate user "alice"`,
			`auth.users[2].passwordHash: not a bcrypt hash (want $2a$, $2b$ or $2y$, 60 characters; a password belongs in passwordFile)`,
			`auth.users[3].name: "robot+x": a user name must not contain "+" (reserved for robot+NAME)`,
			`auth.groups[0].members[1]: unknown user "nobody"`,
			`auth.rules[1].subjects[0]: unknown subject kind "team" in "team:x"`,
			`auth.rules[1].repositories[0]: invalid pattern "a//b": empty path segment`,
			`auth.rules[1].actions[0]: unknown action "pul" (want pull, push, delete or *)`,
			`auth.rules[2].actions[0]: anonymous may only be allowed to pull, not "push"`,
			`auth.rules[2].effect: must be allow or deny, got "maybe"`,
			`auth.rules[3].subjects[0]: unknown group "ghosts"`,
			`auth.tagRules[1].tags[0]: invalid pattern "[": syntax error in pattern`,
			`auth.tagRules[2]: restricts nothing: set immutable, create, overwrite or delete`,
			`auth.rateLimit.maxBackoff: must be at least rateLimit.backoff`,
			`auth.admins[1]: anonymous clients are never admins: name users, groups or robots`,
			`auth.admins[2]: unknown group "ghosts"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := valid()
			tt.modify(&a)
			var got []string
			for _, err := range a.Validate("auth") {
				got = append(got, err.Error())
			}
			// The disabled check iterates a map: compare as a set.
			if diff := cmp.Diff(tt.want, got, cmpSortStrings); diff != "" {
				t.Errorf("Validate (-want +got):\n%s", diff)
			}
			if len(tt.want) == 0 && a.Enabled {
				if _, err := NewPolicy(a); err != nil {
					t.Errorf("NewPolicy of a valid config: %v", err)
				}
			}
		})
	}
}

var cmpSortStrings = cmp.Transformer("sort", func(in []string) []string {
	out := append([]string(nil), in...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
})

func TestProvisionIdempotent(t *testing.T) {
	t.Parallel()
	var a, b config.Auth
	a.Provision()
	b.Provision()
	b.Provision()
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("Provision not idempotent:\n%s", diff)
	}
	if errs := a.Validate("auth"); len(errs) != 0 {
		t.Errorf("provisioned disabled section invalid: %v", errors.Join(errs...))
	}
	if a.Token.Lifetime.D().String() != "5m0s" || !strings.HasPrefix(a.Robots.Path, "/") {
		t.Errorf("defaults: lifetime %s, robots path %q", a.Token.Lifetime.D(), a.Robots.Path)
	}
}
