package policy

import (
	"fmt"
	"path"
)

// A Glob matches a single name, such as a tag, with path.Match syntax
// (v*, release-[0-9]*). Unlike a Pattern it has no ** and no segments.
//
// The zero Glob matches nothing.
type Glob struct {
	raw string
}

// ParseGlob checks a glob. It returns an error for an empty glob, one that
// contains ** and malformed brackets, worded as ParsePattern words them.
func ParseGlob(s string) (Glob, error) {
	if s == "" {
		return Glob{}, fmt.Errorf("empty pattern")
	}
	if err := checkSegment(s, s); err != nil {
		return Glob{}, err
	}
	return Glob{raw: s}, nil
}

// String returns the glob as written.
func (g Glob) String() string { return g.raw }

// Match reports whether name matches the glob.
func (g Glob) Match(name string) bool {
	if g.raw == "" {
		return false
	}
	ok, err := path.Match(g.raw, name)
	return err == nil && ok
}

// MarshalText returns the glob as written.
func (g Glob) MarshalText() ([]byte, error) { return []byte(g.raw), nil }

// UnmarshalText parses a glob as ParseGlob does and returns its errors.
func (g *Glob) UnmarshalText(text []byte) error {
	v, err := ParseGlob(string(text))
	if err != nil {
		return err
	}
	*g = v
	return nil
}
