package auth

import (
	"testing"

	"github.com/portcullis/portcullis/config"
)

// FuzzPolicy builds a policy from fuzzed rule parts and checks the
// invariants of every decision: nothing beyond the request, anonymous never
// writes, a deny on the same subject and pattern always wins, and no input
// panics.
func FuzzPolicy(f *testing.F) {
	f.Add("group:devs", "team/**", "pull,push", "team/app", "user:alice", uint8(3), "v1", uint8(1))
	f.Add("anonymous", "**", "pull", "a/b", "anonymous", uint8(7), "latest", uint8(2))
	f.Add("robot:r*", "a/**/b", "*", "a/x/b", "robot:rel", uint8(4), "v*", uint8(3))
	f.Add("authenticated", "[", "delete", "x", "user:[", uint8(255), "[", uint8(0))
	f.Fuzz(func(t *testing.T, subj, pattern, actions, repo, who string, requested uint8, tag string, op uint8) {
		acts := splitComma(actions)
		p, err := NewPolicy(config.Auth{
			Enabled: true, AnonymousPull: requested&0x80 != 0,
			Groups: []config.AuthGroup{{Name: "devs", Members: []string{"alice"}}},
			Rules: []config.AccessRule{
				{Name: "allow", Subjects: []string{subj}, Repositories: []string{pattern}, Actions: acts},
				{Name: "deny", Effect: "deny", Subjects: []string{"user:mallory"}, Repositories: []string{pattern}, Actions: acts},
			},
			TagRules: []config.TagRule{{Name: "t", Repositories: []string{pattern}, Tags: []string{tag}, Immutable: true, Create: []string{subj}}},
		})
		if err != nil {
			return
		}
		s, err := ParseSubject(who)
		if err != nil {
			s = Subject{}
		}
		s = p.SubjectForLogin(s.Login())
		req := Actions(requested) & AllActions
		got, d := p.Grant(s, repo, req)
		if !req.Has(got) || d.Granted != got {
			t.Fatalf("granted %s for requested %s", got, req)
		}
		if s.Kind == Anonymous && got&^Pull != 0 {
			t.Fatalf("anonymous granted %s", got)
		}
		if got, _ := p.Grant(p.User("mallory"), repo, req); got&ParseActionsOrZero(acts) != 0 {
			t.Fatalf("deny rule did not win: mallory granted %s", got)
		}
		if len(d.Rulings) != len(req.Each()) {
			t.Fatalf("%d rulings for %d actions", len(d.Rulings), len(req.Each()))
		}
		r := p.TagDecision(s, repo, tag, TagOp(op%4))
		if r.Allowed && (TagOp(op%4) == TagOverwrite || TagOp(op%4) == TagDelete) && r.Rule == "t" {
			t.Fatalf("immutable tag rule allowed %s", TagOp(op%4))
		}
		_, _, _ = p.Explain(s, "repository:"+repo+":"+actions)
	})
}

// ParseActionsOrZero is ParseActions ignoring errors, for the fuzz oracle.
func ParseActionsOrZero(names []string) Actions {
	a, _ := ParseActions(names...)
	return a
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}
