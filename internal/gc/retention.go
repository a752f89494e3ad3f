package gc

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/policy"
)

// retention is the compiled retention configuration.
type retention []retentionPolicy

type retentionPolicy struct {
	repos []policy.Pattern
	keep  []keepRule
}

type keepRule struct {
	tags         []policy.Glob
	most         int
	pulledWithin time.Duration
}

func compileRetention(c config.Retention) (retention, error) {
	var out retention
	for i, p := range c.Policies {
		var rp retentionPolicy
		for _, s := range p.Repositories {
			pat, err := policy.ParsePattern(s)
			if err != nil {
				return nil, fmt.Errorf("retention.policies[%d]: %w", i, err)
			}
			rp.repos = append(rp.repos, pat)
		}
		for j, k := range p.Keep {
			globs, err := k.TagGlobs()
			if err != nil {
				return nil, fmt.Errorf("retention.policies[%d].keep[%d]: %w", i, j, err)
			}
			rp.keep = append(rp.keep, keepRule{tags: globs, most: k.MostRecentlyPushed, pulledWithin: k.PulledWithin.D()})
		}
		out = append(out, rp)
	}
	return out, nil
}

// policyFor returns the first policy matching repo, nil for none.
func (r retention) policyFor(repo string) *retentionPolicy {
	for i := range r {
		for _, p := range r[i].repos {
			if p.Match(repo) {
				return &r[i]
			}
		}
	}
	return nil
}

// needsPulls reports whether any rule keeps tags by pull time.
func (r retention) needsPulls() bool {
	for _, p := range r {
		for _, k := range p.keep {
			if k.pulledWithin > 0 {
				return true
			}
		}
	}
	return false
}

func (k keepRule) matches(tag string) bool {
	for _, g := range k.tags {
		if g.Match(tag) {
			return true
		}
	}
	return false
}

// unkept returns the tags among candidates the policy does not keep.
// lastUse is a tag's latest pull or push.
func (p *retentionPolicy) unkept(candidates []*tagState, lastUse func(*tagState) time.Time, now time.Time) []*tagState {
	kept := map[string]bool{}
	for _, k := range p.keep {
		var matching []*tagState
		for _, t := range candidates {
			if k.matches(t.name) {
				matching = append(matching, t)
			}
		}
		if k.most == 0 && k.pulledWithin == 0 {
			for _, t := range matching {
				kept[t.name] = true
			}
			continue
		}
		if k.most > 0 {
			slices.SortStableFunc(matching, func(a, b *tagState) int {
				if c := b.modified.Compare(a.modified); c != 0 {
					return c
				}
				return strings.Compare(a.name, b.name)
			})
			for i, t := range matching {
				if i < k.most {
					kept[t.name] = true
				}
			}
		}
		if k.pulledWithin > 0 {
			for _, t := range matching {
				if now.Sub(lastUse(t)) <= k.pulledWithin {
					kept[t.name] = true
				}
			}
		}
	}
	var out []*tagState
	for _, t := range candidates {
		if !kept[t.name] {
			out = append(out, t)
		}
	}
	return out
}
