package auth

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/portcullis/portcullis/config"
)

func testPolicy(t testing.TB) *Policy {
	t.Helper()
	p, err := NewPolicy(config.Auth{
		Enabled:       true,
		AnonymousPull: true,
		Catalog:       []string{"group:admins"},
		Groups: []config.AuthGroup{
			{Name: "devs", Members: []string{"alice", "bob"}},
			{Name: "admins", Members: []string{"root"}},
		},
		Rules: []config.AccessRule{
			{Name: "devs-team", Subjects: []string{"group:devs"}, Repositories: []string{"team/**"}, Actions: []string{"pull", "push"}},
			{Name: "admins-all", Subjects: []string{"group:admins"}, Repositories: []string{"**"}, Actions: []string{"*"}},
			{Name: "secret-deny", Effect: "deny", Subjects: []string{"anonymous", "user:bob"}, Repositories: []string{"team/secret", "private/**"}, Actions: []string{"pull"}},
			{Name: "frozen", Effect: "deny", Subjects: []string{"authenticated"}, Repositories: []string{"team/frozen-*"}, Actions: []string{"push", "delete"}},
			{Subjects: []string{"user:carol"}, Repositories: []string{"carol/*"}, Actions: []string{"*"}},
		},
		TagRules: []config.TagRule{
			{Name: "release-tags", Repositories: []string{"team/**"}, Tags: []string{"v*"}, Create: []string{"robot:release"}, Overwrite: []string{"robot:release"}},
			{Name: "immutable-releases", Tags: []string{"v*.*.*"}, Immutable: true},
			{Name: "latest-delete", Tags: []string{"latest"}, Delete: []string{"group:admins"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestGrant(t *testing.T) {
	t.Parallel()
	p := testPolicy(t)
	release, err := NewPermission([]string{"team/app", "team/lib-*"}, []string{"pull", "push"})
	if err != nil {
		t.Fatal(err)
	}
	robot := Subject{Kind: Robot, Name: "release", Scope: []Permission{release}}
	tests := []struct {
		name      string
		subject   Subject
		repo      string
		requested Actions
		want      Actions
		wantRules []string // one per requested action, canonical order
	}{
		{"group allow", p.User("alice"), "team/app", Pull | Push, Pull | Push, []string{"devs-team", "devs-team"}},
		{"never more than requested", p.User("alice"), "team/app", Pull, Pull, []string{"devs-team"}},
		{"intersection", p.User("alice"), "team/app", Pull | Push | Delete, Pull | Push, []string{"devs-team", "devs-team", ""}},
		{"double star depth", p.User("alice"), "team/a/b/c", Pull, Pull, []string{"devs-team"}},
		{"double star needs a segment", p.User("alice"), "team", Pull, 0, []string{""}},
		{"deny wins over allow", p.User("bob"), "team/secret", Pull | Push, Push, []string{"secret-deny", "devs-team"}},
		{"deny authenticated", p.User("root"), "team/frozen-x", Pull | Push | Delete, Pull, []string{"admins-all", "frozen", "frozen"}},
		{"no rule", p.User("mallory"), "team/app", Pull, 0, []string{""}},
		{"default rule name", p.User("carol"), "carol/x", Delete, Delete, []string{"rules[4]"}},
		{"star is one segment", p.User("carol"), "carol/x/y", Pull, 0, []string{""}},
		{"anonymous pull", Subject{}, "team/app", Pull | Push, Pull, []string{AnonymousPullRule, ""}},
		{"anonymous denied", Subject{}, "private/x", Pull, 0, []string{"secret-deny"}},
		{"robot scope", robot, "team/lib-x", Pull | Push | Delete, Pull | Push, []string{"robot:release scope", "robot:release scope", ""}},
		{"robot outside scope", robot, "team/other", Pull, 0, []string{""}},
		{"robot deny still wins", robot, "team/frozen-app", Push, 0, []string{"frozen"}},
		{"invalid repository", p.User("root"), "Team/App", Pull, 0, []string{""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, d := p.Grant(tt.subject, tt.repo, tt.requested)
			if got != tt.want {
				t.Errorf("Grant = %s, want %s", got, tt.want)
			}
			var rules []string
			for _, r := range d.Rulings {
				rules = append(rules, r.Rule)
			}
			if diff := cmp.Diff(tt.wantRules, rules); diff != "" {
				t.Errorf("rules (-want +got):\n%s", diff)
			}
			if d.Granted != got || !tt.requested.Has(got) {
				t.Errorf("decision granted %s, requested %s", d.Granted, tt.requested)
			}
		})
	}
}

func TestTagDecision(t *testing.T) {
	t.Parallel()
	p := testPolicy(t)
	release := Subject{Kind: Robot, Name: "release"}
	tests := []struct {
		name    string
		subject Subject
		repo    string
		tag     string
		op      TagOp
		want    Ruling
	}{
		{"robot creates release tag", release, "team/app", "v1.2.3", TagCreate, Ruling{Allowed: true, Rule: "release-tags", Reason: "allowed by tag rule"}},
		{"user may not create v tag", p.User("alice"), "team/app", "v1", TagCreate, Ruling{Rule: "release-tags", Reason: "only robot:release may create this tag"}},
		{"robot moves v1", release, "team/app", "v1", TagOverwrite, Ruling{Allowed: true, Rule: "release-tags", Reason: "allowed by tag rule"}},
		{"nobody moves immutable", release, "team/app", "v1.2.3", TagOverwrite, Ruling{Rule: "immutable-releases", Reason: "tag is immutable"}},
		{"nobody deletes immutable", p.User("root"), "other/app", "v1.0.0", TagDelete, Ruling{Rule: "immutable-releases", Reason: "tag is immutable"}},
		{"immutable may be created", p.User("root"), "other/app", "v1.0.0", TagCreate, Ruling{Allowed: true, Reason: "no tag rule restricts it"}},
		{"unrestricted tag", p.User("alice"), "team/app", "dev", TagOverwrite, Ruling{Allowed: true, Reason: "no tag rule restricts it"}},
		{"latest delete admins only", p.User("alice"), "team/app", "latest", TagDelete, Ruling{Rule: "latest-delete", Reason: "only group:admins may delete this tag"}},
		{"latest delete admin", p.User("root"), "team/app", "latest", TagDelete, Ruling{Allowed: true, Rule: "latest-delete", Reason: "allowed by tag rule"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tt.want, p.TagDecision(tt.subject, tt.repo, tt.tag, tt.op)); diff != "" {
				t.Errorf("TagDecision (-want +got):\n%s", diff)
			}
		})
	}
}

func TestExplain(t *testing.T) {
	t.Parallel()
	p := testPolicy(t)
	got, allowed, err := p.Explain(p.User("bob"), "repository:team/secret:pull,push,delete")
	if err != nil {
		t.Fatal(err)
	}
	want := `subject:    user:bob (groups: devs)
repository: team/secret
requested:  pull,push,delete
granted:    push
  pull    denied   rule "secret-deny": denied by rule
  push    allowed  rule "devs-team": allowed by rule
  delete  denied   no rule matched (default deny): no rule allows it
`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Explain (-want +got):\n%s", diff)
	}
	if allowed {
		t.Error("Explain reports allowed with pull and delete denied")
	}
	got, allowed, err = p.Explain(p.User("root"), "registry:catalog:*")
	if err != nil {
		t.Fatal(err)
	}
	want = "subject:    user:root (groups: admins)\nresource:   registry:catalog\n  *       allowed  rule \"catalog\": listed in catalog\n"
	if !allowed {
		t.Error("Explain reports the catalog denied to root")
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Explain catalog (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"repository:team/app", "repository:Team:pull", "repository:team/app:pul", "blob:x:pull"} {
		if _, _, err := p.Explain(Subject{}, bad); err == nil {
			t.Errorf("Explain(%q) succeeded", bad)
		}
	}
}

func TestParseScope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want Scope
	}{
		{"repository:team/app:pull,push", Scope{Type: "repository", Name: "team/app", Actions: []string{"pull", "push"}}},
		{"registry:catalog:*", Scope{Type: "registry", Name: "catalog", Actions: []string{"*"}}},
		{"repository(plugin):team/app:pull", Scope{Type: "repository", Class: "plugin", Name: "team/app", Actions: []string{"pull"}}},
	}
	for _, tt := range tests {
		got, err := ParseScope(tt.in)
		if err != nil {
			t.Fatalf("ParseScope(%q): %v", tt.in, err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseScope(%q) (-want +got):\n%s", tt.in, diff)
		}
		if got.String() != tt.in {
			t.Errorf("String() = %q, want %q", got.String(), tt.in)
		}
	}
}
