package policy

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustPatterns(t *testing.T, ss ...string) Patterns {
	t.Helper()
	ps, err := ParsePatterns(ss)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func TestSetFirst(t *testing.T) {
	t.Parallel()
	s := NewSet(
		Entry[string]{Patterns: mustPatterns(t, "team/secret", "ops/**"), Value: "strict"},
		Entry[string]{Patterns: mustPatterns(t, "team/**"), Value: "team"},
		Entry[string]{Patterns: mustPatterns(t, "**"), Value: "default"},
		Entry[string]{Patterns: mustPatterns(t, "team/secret"), Value: "unreachable"},
	)
	tests := []struct {
		repo   string
		want   string
		wantOK bool
	}{
		{repo: "team/secret", want: "strict", wantOK: true},
		{repo: "ops/a/b", want: "strict", wantOK: true},
		{repo: "team/app", want: "team", wantOK: true},
		{repo: "other", want: "default", wantOK: true},
		{repo: "", want: "", wantOK: false},
	}
	for _, tt := range tests {
		got, ok := s.First(tt.repo)
		if diff := cmp.Diff(tt.want, got); diff != "" || ok != tt.wantOK {
			t.Errorf("First(%q) = %q, %v, want %q, %v", tt.repo, got, ok, tt.want, tt.wantOK)
		}
	}
	if s.Len() != 4 {
		t.Errorf("Len() = %d, want 4", s.Len())
	}
}

func TestSetEmpty(t *testing.T) {
	t.Parallel()
	var s Set[*int]
	if v, ok := s.First("a"); ok || v != nil {
		t.Errorf("the zero Set applies to a: %v, %v", v, ok)
	}
	e := NewSet(Entry[int]{Value: 1}) // no patterns: matches nothing
	if _, ok := e.First("a"); ok {
		t.Error("an entry without patterns applies to a")
	}
}

func TestNewSetCopies(t *testing.T) {
	t.Parallel()
	entries := []Entry[int]{{Patterns: mustPatterns(t, "a"), Value: 1}}
	s := NewSet(entries...)
	entries[0].Value = 2
	if v, _ := s.First("a"); v != 1 {
		t.Errorf("First(a) = %d after the caller changed its slice, want 1", v)
	}
}
