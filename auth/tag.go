package auth

import (
	"fmt"
	"slices"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/policy"
)

// TagOp is a change to a tag.
type TagOp uint8

// The tag operations tag rules restrict.
const (
	// TagCreate points a tag that does not exist yet at a manifest.
	TagCreate TagOp = iota + 1
	// TagOverwrite moves an existing tag to a different manifest.
	TagOverwrite
	// TagDelete removes a tag.
	TagDelete
)

// String returns create, overwrite or delete.
func (op TagOp) String() string {
	switch op {
	case TagCreate:
		return "create"
	case TagOverwrite:
		return "overwrite"
	case TagDelete:
		return "delete"
	}
	return fmt.Sprintf("TagOp(%d)", op)
}

// ParseTagOp parses create, overwrite or delete.
func ParseTagOp(s string) (TagOp, error) {
	for _, op := range []TagOp{TagCreate, TagOverwrite, TagDelete} {
		if op.String() == s {
			return op, nil
		}
	}
	return 0, fmt.Errorf("unknown tag operation %q (want create, overwrite or delete)", s)
}

type tagRule struct {
	name      string
	repos     policy.Patterns
	tags      []policy.Glob
	immutable bool
	who       map[TagOp][]matcher
}

func newTagRule(i int, r config.TagRule) (tagRule, error) {
	t := tagRule{name: r.Name, immutable: r.Immutable, who: map[TagOp][]matcher{}}
	if t.name == "" {
		t.name = fmt.Sprintf("tagRules[%d]", i)
	}
	repos := r.Repositories
	if len(repos) == 0 {
		repos = []string{"**"}
	}
	var err error
	if t.repos, err = policy.ParsePatterns(repos); err != nil {
		return t, fmt.Errorf("tag rule %s: %w", t.name, err)
	}
	if len(r.Tags) == 0 {
		return t, fmt.Errorf("tag rule %s: no tags", t.name)
	}
	for _, tag := range r.Tags {
		g, err := policy.ParseGlob(tag)
		if err != nil {
			return t, fmt.Errorf("tag rule %s: %w", t.name, err)
		}
		t.tags = append(t.tags, g)
	}
	for op, list := range map[TagOp][]string{TagCreate: r.Create, TagOverwrite: r.Overwrite, TagDelete: r.Delete} {
		ms, err := parseMatchers(list)
		if err != nil {
			return t, fmt.Errorf("tag rule %s: %s: %w", t.name, op, err)
		}
		if len(ms) > 0 {
			t.who[op] = ms
		}
	}
	return t, nil
}

// TagDecision decides whether the subject may apply op to the tag in the
// repository. Every tag rule whose repositories and tags match is
// consulted in order: an immutable rule forbids overwrite and delete to
// everyone; a rule listing subjects for op allows only those. With no
// restricting rule the change is allowed (repository push or delete
// permission is checked separately, by the token).
func (p *Policy) TagDecision(s Subject, repository, tag string, op TagOp) Ruling {
	allowed := Ruling{Allowed: true, Reason: "no tag rule restricts it"}
	for i := range p.tagRules {
		r := &p.tagRules[i]
		if !r.repos.Match(repository) || !slices.ContainsFunc(r.tags, func(g policy.Glob) bool { return g.Match(tag) }) {
			continue
		}
		if r.immutable && (op == TagOverwrite || op == TagDelete) {
			return Ruling{Rule: r.name, Reason: "tag is immutable"}
		}
		who, ok := r.who[op]
		if !ok {
			continue
		}
		if !matchAny(who, s) {
			return Ruling{Rule: r.name, Reason: fmt.Sprintf("only %s may %s this tag", joinMatchers(who), op)}
		}
		if allowed.Rule == "" {
			allowed = Ruling{Allowed: true, Rule: r.name, Reason: "allowed by tag rule"}
		}
	}
	return allowed
}

func joinMatchers(ms []matcher) string {
	var out string
	for i, m := range ms {
		if i > 0 {
			out += ", "
		}
		out += m.String()
	}
	return out
}

// Immutable reports whether an immutable tag rule covers the tag in the
// repository: nobody may move or delete it, retention included.
func (p *Policy) Immutable(repository, tag string) bool {
	for i := range p.tagRules {
		r := &p.tagRules[i]
		if r.immutable && r.repos.Match(repository) && slices.ContainsFunc(r.tags, func(g policy.Glob) bool { return g.Match(tag) }) {
			return true
		}
	}
	return false
}
