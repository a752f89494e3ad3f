package policy

import (
	"encoding/json"
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPatternMatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern string
		repo    string
		want    bool
	}{
		{"team/app", "team/app", true},
		{"team/app", "team/app2", false},
		{"team/*", "team/app", true},
		{"team/*", "team/a/b", false},
		{"team/**", "team/a/b", true},
		{"team/**", "team", false},
		{"a/**/b", "a/b", true},
		{"a/**/b", "a/x/y/b", true},
		{"a/**/b", "a/x/y/c", false},
		{"a/**/**/b", "a/b", true},
		{"**", "x", true},
		{"**", "", false},
		{"**/app", "x/y/app", true},
		{"**/**/**", "a/b/c", true},
		{"team/app-?", "team/app-1", true},
		{"team/[a-c]*", "team/bob", true},
		{"team/[a-c]*", "team/dan", false},
	}
	for _, tt := range tests {
		p, err := ParsePattern(tt.pattern)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", tt.pattern, err)
		}
		if got := p.Match(tt.repo); got != tt.want {
			t.Errorf("%q.Match(%q) = %v, want %v", tt.pattern, tt.repo, got, tt.want)
		}
		if p.String() != tt.pattern {
			t.Errorf("String() = %q, want %q", p.String(), tt.pattern)
		}
	}
	if (Pattern{}).Match("x") {
		t.Error("the zero Pattern matches x")
	}
}

func TestParsePatternErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern string
		want    string
	}{
		{"", "empty pattern"},
		{"team//app", `invalid pattern "team//app": empty path segment`},
		{"/team", `invalid pattern "/team": empty path segment`},
		{"team/", `invalid pattern "team/": empty path segment`},
		{"team/**x", `invalid pattern "team/**x": ** must be a whole path segment`},
		{"team/[", `invalid pattern "team/[": syntax error in pattern`},
	}
	for _, tt := range tests {
		_, err := ParsePattern(tt.pattern)
		if err == nil || err.Error() != tt.want {
			t.Errorf("ParsePattern(%q) = %v, want %s", tt.pattern, err, tt.want)
		}
	}
}

func TestPatternText(t *testing.T) {
	t.Parallel()
	var got struct {
		Repositories Patterns `json:"repositories"`
	}
	if err := json.Unmarshal([]byte(`{"repositories":["team/**","a/*"]}`), &got); err != nil {
		t.Fatal(err)
	}
	if !got.Repositories.Match("team/x/y") || !got.Repositories.Match("a/b") || got.Repositories.Match("b/a") {
		t.Errorf("decoded patterns %v match wrongly", got.Repositories)
	}
	out, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(`{"repositories":["team/**","a/*"]}`, string(out)); diff != "" {
		t.Errorf("Marshal (-want +got):\n%s", diff)
	}
	err = json.Unmarshal([]byte(`{"repositories":["a//b"]}`), &got)
	if err == nil || !regexp.MustCompile(`invalid pattern "a//b": empty path segment`).MatchString(err.Error()) {
		t.Errorf("Unmarshal of a//b: %v", err)
	}
}

func TestPatterns(t *testing.T) {
	t.Parallel()
	ps, err := ParsePatterns([]string{"a/**", "b"})
	if err != nil {
		t.Fatal(err)
	}
	for repo, want := range map[string]bool{"a/x": true, "b": true, "b/x": false, "c": false} {
		if got := ps.Match(repo); got != want {
			t.Errorf("Match(%q) = %v, want %v", repo, got, want)
		}
	}
	if Patterns(nil).Match("a") {
		t.Error("no patterns match a")
	}
	if _, err := ParsePatterns([]string{"a", ""}); err == nil || err.Error() != "empty pattern" {
		t.Errorf("ParsePatterns with an empty pattern: %v", err)
	}
}

// repositoryRE is distribution's repository name grammar.
var repositoryRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)

// FuzzPattern checks that parsing and matching never panic and that a
// literal pattern matches exactly itself.
func FuzzPattern(f *testing.F) {
	f.Add("team/**", "team/app")
	f.Add("a/**/b/**/c", "a/x/b/y/c")
	f.Add("**/**/**/**/**/x", "a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/y")
	f.Add("team/[a-c]*", "team/bob")
	f.Add("a//b", "a/b")
	f.Fuzz(func(t *testing.T, pattern, repo string) {
		p, err := ParsePattern(pattern)
		if err != nil {
			return
		}
		p.Match(repo)
		if len(repo) <= 255 && repositoryRE.MatchString(repo) {
			lit, err := ParsePattern(repo)
			if err != nil || !lit.Match(repo) {
				t.Fatalf("literal pattern %q does not match itself (%v)", repo, err)
			}
		}
	})
}
