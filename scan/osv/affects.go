package osv

import (
	"cmp"
	"slices"
	"strings"

	"github.com/google/osv-scalibr/semantic"
)

// Match is the outcome of testing one version against one Affected entry.
type Match struct {
	// Affected reports whether the version is affected.
	Affected bool
	// Fixed is the lowest fixed version above the installed one in the range that matched,
	// or "" when the record names none.
	Fixed string
}

// Affects reports whether version of a package in ecosystem (the package's own ecosystem, a
// release suffix such as "Debian:12" is allowed) falls in the entry's explicit versions list
// or in one of its ECOSYSTEM or SEMVER ranges. GIT ranges are ignored. Versions that the
// ecosystem's ordering cannot parse are never affected by a range; they can still be listed
// explicitly.
func (a *Affected) Affects(ecosystem, version string) Match {
	var m Match
	if slices.Contains(a.Versions, version) {
		m.Affected = true
	}
	for i := range a.Ranges {
		rg := &a.Ranges[i]
		var parse func(string) (semantic.Version, error)
		switch rg.Type {
		case RangeSemver:
			parse = func(s string) (semantic.Version, error) {
				return semantic.ParseSemverVersion(strings.TrimPrefix(s, "v")), nil
			}
		case RangeEcosystem:
			parse = func(s string) (semantic.Version, error) { return semantic.Parse(s, ecosystem) }
		default:
			continue
		}
		ok, fixed := rangeAffects(rg, version, parse)
		if ok {
			m.Affected = true
			if fixed != "" && (m.Fixed == "" || lessVersion(parse, fixed, m.Fixed)) {
				m.Fixed = fixed
			}
		}
	}
	return m
}

// rangeAffects walks the range's events in version order, as the OSV schema's evaluation
// algorithm does: an introduced event at or below the version opens the range, a fixed
// event at or below it or a last_affected event below it closes it. A limit at or below the
// version puts it out of the range.
func rangeAffects(rg *Range, version string, parse func(string) (semantic.Version, error)) (bool, string) {
	v, err := parse(version)
	if err != nil {
		return false, ""
	}
	type parsed struct {
		e    Event
		v    semantic.Version
		zero bool // introduced "0": below every version
	}
	events := make([]parsed, 0, len(rg.Events))
	for _, e := range rg.Events {
		s := cmp.Or(e.Introduced, e.Fixed, e.LastAffected, e.Limit)
		if e.Introduced == "0" {
			events = append(events, parsed{e: e, zero: true})
			continue
		}
		if e.Limit == "*" {
			continue // "*" means no limit
		}
		ev, err := parse(s)
		if err != nil {
			continue
		}
		events = append(events, parsed{e: e, v: ev})
	}
	compare := func(a, b parsed) int {
		switch {
		case a.zero && b.zero:
			return 0
		case a.zero:
			return -1
		case b.zero:
			return 1
		}
		c, err := a.v.Compare(b.v)
		if err != nil {
			return 0
		}
		return c
	}
	slices.SortStableFunc(events, compare)

	cmpV := func(p parsed) int { // sign of version - event
		if p.zero {
			return 1
		}
		c, err := v.Compare(p.v)
		if err != nil {
			return 0
		}
		return c
	}
	for _, p := range events {
		if p.e.Limit != "" && cmpV(p) >= 0 {
			return false, ""
		}
	}
	affected := false
	for _, p := range events {
		switch {
		case p.e.Introduced != "" && cmpV(p) >= 0:
			affected = true
		case p.e.Fixed != "" && cmpV(p) >= 0:
			affected = false
		case p.e.LastAffected != "" && cmpV(p) > 0:
			affected = false
		}
	}
	if !affected {
		return false, ""
	}
	for _, p := range events {
		if p.e.Fixed != "" && cmpV(p) < 0 {
			return true, p.e.Fixed
		}
	}
	return true, ""
}

func lessVersion(parse func(string) (semantic.Version, error), a, b string) bool {
	va, err := parse(a)
	if err != nil {
		return false
	}
	c, err := va.CompareStr(b)
	return err == nil && c < 0
}
