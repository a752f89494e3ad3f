package policy

import (
	"fmt"
	"path"
	"strings"
)

// A Pattern matches repository names. Segments are separated by "/"; a
// segment is a path.Match glob (* and ? never cross a "/"), and a segment
// that is exactly ** matches any number of segments: at least one at the
// end of a pattern (team/** matches team/app and team/a/b, not team), zero
// or more elsewhere (a/**/b matches a/b and a/x/y/b).
//
// The zero Pattern matches nothing.
type Pattern struct {
	raw  string
	segs []string
}

// ParsePattern checks and compiles a repository pattern. It returns an
// error for an empty pattern, an empty segment, ** inside a segment and
// malformed brackets.
func ParsePattern(s string) (Pattern, error) {
	if s == "" {
		return Pattern{}, fmt.Errorf("empty pattern")
	}
	raw := strings.Split(s, "/")
	segs := make([]string, 0, len(raw))
	for _, seg := range raw {
		if seg == "**" {
			if len(segs) > 0 && segs[len(segs)-1] == "**" {
				continue // a/**/**/b is a/**/b
			}
			segs = append(segs, seg)
			continue
		}
		if err := checkSegment(s, seg); err != nil {
			return Pattern{}, err
		}
		segs = append(segs, seg)
	}
	return Pattern{raw: s, segs: segs}, nil
}

// checkSegment checks one path segment of pattern s: not empty, no **
// inside it, well-formed brackets.
func checkSegment(s, seg string) error {
	switch {
	case seg == "":
		return fmt.Errorf("invalid pattern %q: empty path segment", s)
	case strings.Contains(seg, "**"):
		return fmt.Errorf("invalid pattern %q: ** must be a whole path segment", s)
	}
	if _, err := path.Match(seg, ""); err != nil {
		return fmt.Errorf("invalid pattern %q: %w", s, err)
	}
	return nil
}

// String returns the pattern as written.
func (p Pattern) String() string { return p.raw }

// Match reports whether the repository name matches the pattern.
func (p Pattern) Match(repo string) bool {
	if len(p.segs) == 0 || repo == "" {
		return false
	}
	return matchSegments(p.segs, strings.Split(repo, "/"))
}

// MarshalText returns the pattern as written.
func (p Pattern) MarshalText() ([]byte, error) { return []byte(p.raw), nil }

// UnmarshalText parses a pattern as ParsePattern does and returns its errors.
func (p *Pattern) UnmarshalText(text []byte) error {
	v, err := ParsePattern(string(text))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// matchSegments runs in O(len(p)·len(r)): one row of a dynamic programme
// over pattern segments, so no pattern can make matching exponential.
func matchSegments(p, r []string) bool {
	// cur[j]: p[i:] matches r[j:], computed from the last pattern segment back.
	cur := make([]bool, len(r)+1)
	next := make([]bool, len(r)+1)
	cur[len(r)] = true // the empty pattern matches the empty rest
	for i := len(p) - 1; i >= 0; i-- {
		last := i == len(p)-1
		for j := len(r); j >= 0; j-- {
			switch {
			case p[i] == "**":
				// Zero segments (not at the end), or one segment and stay on **.
				v := !last && cur[j]
				if j < len(r) {
					v = v || cur[j+1] || next[j+1]
				}
				next[j] = v
			case j == len(r):
				next[j] = false
			default:
				ok, _ := path.Match(p[i], r[j])
				next[j] = ok && cur[j+1]
			}
		}
		cur, next = next, cur
	}
	return cur[0]
}

// Patterns is a list of repository patterns that matches a repository when
// any of them does. An empty list matches nothing.
type Patterns []Pattern

// ParsePatterns parses each pattern with ParsePattern and returns the
// first error.
func ParsePatterns(ss []string) (Patterns, error) {
	out := make(Patterns, 0, len(ss))
	for _, s := range ss {
		p, err := ParsePattern(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Match reports whether any of the patterns matches the repository name.
func (ps Patterns) Match(repo string) bool {
	for _, p := range ps {
		if p.Match(repo) {
			return true
		}
	}
	return false
}
