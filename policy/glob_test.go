package policy

import (
	"encoding/json"
	"testing"
)

func TestGlob(t *testing.T) {
	t.Parallel()
	tests := []struct {
		glob, name string
		want       bool
	}{
		{"v*", "v1.2", true},
		{"v*", "latest", false},
		{"release-[0-9]*", "release-3", true},
		{"release-[0-9]*", "release-x", false},
		{"*", "a/b", false},
		{"latest", "latest", true},
	}
	for _, tt := range tests {
		g, err := ParseGlob(tt.glob)
		if err != nil {
			t.Fatalf("ParseGlob(%q): %v", tt.glob, err)
		}
		if got := g.Match(tt.name); got != tt.want {
			t.Errorf("%q.Match(%q) = %v, want %v", tt.glob, tt.name, got, tt.want)
		}
	}
	if (Glob{}).Match("") {
		t.Error("the zero Glob matches the empty name")
	}
}

func TestParseGlobErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		glob string
		want string
	}{
		{"", "empty pattern"},
		{"v**", `invalid pattern "v**": ** must be a whole path segment`},
		{"[", `invalid pattern "[": syntax error in pattern`},
	}
	for _, tt := range tests {
		_, err := ParseGlob(tt.glob)
		if err == nil || err.Error() != tt.want {
			t.Errorf("ParseGlob(%q) = %v, want %s", tt.glob, err, tt.want)
		}
	}
}

func TestGlobText(t *testing.T) {
	t.Parallel()
	var gs []Glob
	if err := json.Unmarshal([]byte(`["v*","latest"]`), &gs); err != nil {
		t.Fatal(err)
	}
	if len(gs) != 2 || !gs[0].Match("v1") || gs[1].String() != "latest" {
		t.Errorf("decoded %v", gs)
	}
	if err := json.Unmarshal([]byte(`["["]`), &gs); err == nil {
		t.Error("decoded the glob [")
	}
}
