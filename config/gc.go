package config

import (
	"fmt"
	"time"

	"github.com/portcullis/portcullis/policy"
)

// GC configures garbage collection: what nothing refers to any more is
// deleted while the registry serves.
type GC struct {
	// Interval is how often the background collector runs (on one replica
	// at a time); 0s disables it, and `registry gc` runs it by hand.
	// Default 24h.
	Interval *Duration `yaml:"interval"`
	// Grace protects what is younger: no manifest, tag or blob written
	// less than this long ago is deleted. Default 2h.
	Grace *Duration `yaml:"grace"`
	// DeleteUntagged deletes manifests that no tag reaches and that refer
	// to nothing live (their referrers go with them). Default true.
	DeleteUntagged *bool `yaml:"deleteUntagged"`
	// Workers is how many deletes run at once; default 16.
	Workers int `yaml:"workers"`
	// UnsafeSkipMarkers turns off the markers that keep a blob a client
	// was just told exists. It loses data under concurrent pushes and
	// exists only so that tests can show the markers matter.
	UnsafeSkipMarkers bool `yaml:"unsafeSkipMarkers"`
}

// Retention deletes tags by policy; the collector then frees what they
// held.
type Retention struct {
	// Policies apply per repository: the first whose repositories match
	// decides, and a repository no policy matches keeps every tag.
	Policies []RetentionPolicy `yaml:"policies"`
}

// RetentionPolicy keeps, in the repositories it matches, the tags any of
// its rules keeps, and deletes the others.
type RetentionPolicy struct {
	// Repositories are patterns as in auth rules (ci/**).
	Repositories []string `yaml:"repositories"`
	// Keep lists the rules; a tag is kept if any rule keeps it.
	Keep []KeepRule `yaml:"keep"`
}

// KeepRule keeps the tags matching Tags, all of them or, when a bound is
// set, those within it (both bounds: a tag within either).
type KeepRule struct {
	// Tags are glob patterns on the tag name (v*, ** for every tag).
	Tags []string `yaml:"tags"`
	// MostRecentlyPushed keeps this many of the matching tags, the most
	// recently pushed first.
	MostRecentlyPushed int `yaml:"mostRecentlyPushed"`
	// PulledWithin keeps the matching tags whose manifest was pulled (or
	// pushed) this recently. Pull times are recorded at most once an hour
	// per manifest.
	PulledWithin Duration `yaml:"pulledWithin"`
}

func (g *GC) provision() {
	if g.Interval == nil {
		d := Duration(24 * time.Hour)
		g.Interval = &d
	}
	if g.Grace == nil {
		d := Duration(2 * time.Hour)
		g.Grace = &d
	}
	defaultTrue(&g.DeleteUntagged)
	if g.Workers == 0 {
		g.Workers = 16
	}
}

func (g *GC) validate(bad func(key, format string, args ...any)) {
	if g.Interval != nil && *g.Interval < 0 {
		bad("gc.interval", "must not be negative (0s disables the background collector)")
	}
	if g.Interval != nil && *g.Interval > 0 && g.Interval.D() < time.Minute {
		bad("gc.interval", "must be at least 1m (or 0s to disable the background collector)")
	}
	if g.Grace != nil && *g.Grace < 0 {
		bad("gc.grace", "must not be negative")
	}
	if g.Workers < 0 || g.Workers > 256 {
		bad("gc.workers", "must be between 1 and 256")
	}
}

func (r *Retention) validate(bad func(key, format string, args ...any)) {
	for i, p := range r.Policies {
		key := fmt.Sprintf("retention.policies[%d]", i)
		if len(p.Repositories) == 0 {
			bad(key+".repositories", "must list at least one repository pattern (** for all)")
		}
		for j, s := range p.Repositories {
			if _, err := policy.ParsePattern(s); err != nil {
				bad(fmt.Sprintf("%s.repositories[%d]", key, j), "%v", err)
			}
		}
		if len(p.Keep) == 0 {
			bad(key+".keep", "must have at least one rule: a policy that keeps nothing would delete every tag")
		}
		for j, k := range p.Keep {
			kk := fmt.Sprintf("%s.keep[%d]", key, j)
			if len(k.Tags) == 0 {
				bad(kk+".tags", "must list at least one tag pattern (** for every tag)")
			}
			for n, s := range k.Tags {
				if _, err := parseTagGlob(s); err != nil {
					bad(fmt.Sprintf("%s.tags[%d]", kk, n), "%v", err)
				}
			}
			if k.MostRecentlyPushed < 0 {
				bad(kk+".mostRecentlyPushed", "must not be negative")
			}
			if k.PulledWithin < 0 {
				bad(kk+".pulledWithin", "must not be negative")
			}
		}
	}
}

// TagGlobs returns the rule's tag patterns compiled.
func (k KeepRule) TagGlobs() ([]policy.Glob, error) {
	out := make([]policy.Glob, 0, len(k.Tags))
	for _, s := range k.Tags {
		g, err := parseTagGlob(s)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}

// parseTagGlob reads a tag pattern; ** (every tag, as in repository
// patterns) means the same as *, since a tag has no segments.
func parseTagGlob(s string) (policy.Glob, error) {
	if s == "**" {
		s = "*"
	}
	return policy.ParseGlob(s)
}
