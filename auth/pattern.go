package auth

import (
	"fmt"
	"path"
	"regexp"
	"strings"
)

// A Pattern matches repository names. Segments are separated by "/"; a
// segment is a path.Match glob (* and ? never cross a "/"), and a segment
// that is exactly ** matches any number of segments: at least one at the
// end of a pattern (team/** matches team/app and team/a/b, not team), zero
// or more elsewhere (a/**/b matches a/b and a/x/y/b).
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
		switch {
		case seg == "":
			return Pattern{}, fmt.Errorf("invalid pattern %q: empty path segment", s)
		case seg == "**":
			if len(segs) > 0 && segs[len(segs)-1] == "**" {
				continue // a/**/**/b is a/**/b
			}
		case strings.Contains(seg, "**"):
			return Pattern{}, fmt.Errorf("invalid pattern %q: ** must be a whole path segment", s)
		default:
			if _, err := path.Match(seg, ""); err != nil {
				return Pattern{}, fmt.Errorf("invalid pattern %q: %w", s, err)
			}
		}
		segs = append(segs, seg)
	}
	return Pattern{raw: s, segs: segs}, nil
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

// matchTag matches a tag against a path.Match glob.
func matchTag(pattern, tag string) bool {
	ok, err := path.Match(pattern, tag)
	return err == nil && ok
}

// repositoryRE is distribution's repository name grammar (path components
// of lower-case alphanumerics joined by separators).
var repositoryRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)

// ValidRepository reports whether name is a syntactically valid repository
// name of at most 255 characters.
func ValidRepository(name string) bool {
	return len(name) <= 255 && repositoryRE.MatchString(name)
}
