package auth

import (
	"fmt"
	"slices"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/policy"
)

// Policy holds the access rules, tag rules and group memberships of one
// configuration. It is immutable and safe for concurrent use.
type Policy struct {
	rules         []rule
	tagRules      []tagRule
	catalog       []matcher
	admins        []matcher
	anonymousPull bool
	groups        map[string][]string // user → groups, in configuration order
}

type rule struct {
	name     string
	subjects []matcher
	repos    policy.Patterns
	actions  Actions
	deny     bool
}

// AnonymousPullRule names the decision made by the anonymousPull setting.
const AnonymousPullRule = "anonymousPull"

// NewPolicy compiles the rules of an auth configuration. It returns an
// error naming the first malformed rule; config.Auth.Validate reports all
// of them with their key paths.
func NewPolicy(cfg config.Auth) (*Policy, error) {
	p := &Policy{anonymousPull: cfg.AnonymousPull, groups: map[string][]string{}}
	for _, g := range cfg.Groups {
		for _, m := range g.Members {
			if !slices.Contains(p.groups[m], g.Name) {
				p.groups[m] = append(p.groups[m], g.Name)
			}
		}
	}
	var err error
	if p.catalog, err = parseMatchers(cfg.Catalog); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	if p.admins, err = parseMatchers(cfg.Admins); err != nil {
		return nil, fmt.Errorf("admins: %w", err)
	}
	for i, r := range cfg.Rules {
		name := r.Name
		if name == "" {
			name = fmt.Sprintf("rules[%d]", i)
		}
		c := rule{name: name, deny: r.Effect == "deny"}
		if r.Effect != "" && r.Effect != "allow" && r.Effect != "deny" {
			return nil, fmt.Errorf("rule %s: unknown effect %q", name, r.Effect)
		}
		if c.subjects, err = parseMatchers(r.Subjects); err != nil {
			return nil, fmt.Errorf("rule %s: %w", name, err)
		}
		perm, err := NewPermission(r.Repositories, r.Actions)
		if err != nil {
			return nil, fmt.Errorf("rule %s: %w", name, err)
		}
		c.repos, c.actions = perm.Repositories, perm.Actions
		p.rules = append(p.rules, c)
	}
	for i, r := range cfg.TagRules {
		tr, err := newTagRule(i, r)
		if err != nil {
			return nil, err
		}
		p.tagRules = append(p.tagRules, tr)
	}
	return p, nil
}

// User returns the subject for a user name, with the groups the
// configuration puts it in.
func (p *Policy) User(name string) Subject {
	return Subject{Kind: User, Name: name, Groups: slices.Clone(p.groups[name])}
}

// SubjectForLogin turns a token's sub claim back into a subject: "" is
// anonymous, robot+NAME a robot (without its scope), anything else a user.
// It is what the server uses to evaluate tag rules for an authorized request.
func (p *Policy) SubjectForLogin(login string) Subject {
	switch {
	case login == "":
		return Subject{}
	case len(login) > len(RobotPrefix) && login[:len(RobotPrefix)] == RobotPrefix:
		return Subject{Kind: Robot, Name: login[len(RobotPrefix):]}
	}
	return p.User(login)
}

// Ruling is the outcome for one action: allowed or not, and the rule that
// decided (empty when no rule matched and the default, deny, applied).
type Ruling struct {
	Allowed bool
	Rule    string
	Reason  string
}

// ActionRuling is the ruling for one requested action.
type ActionRuling struct {
	Action Actions
	Ruling
}

// Decision explains a Grant: what was asked, what was granted and why,
// action by action.
type Decision struct {
	Subject    Subject
	Repository string
	Requested  Actions
	Granted    Actions
	Rulings    []ActionRuling
}

// Grant decides which of the requested actions the subject may perform on
// the repository. The result is always a subset of requested: all matching
// deny rules are checked first and win; then any matching allow rule (or,
// for a robot, its own scope) allows; otherwise the action is denied.
// Anonymous subjects are never granted push or delete.
func (p *Policy) Grant(s Subject, repository string, requested Actions) (Actions, Decision) {
	d := Decision{Subject: s, Repository: repository, Requested: requested & AllActions}
	for _, a := range d.Requested.Each() {
		r := p.rule(s, repository, a)
		if r.Allowed {
			d.Granted |= a
		}
		d.Rulings = append(d.Rulings, ActionRuling{Action: a, Ruling: r})
	}
	return d.Granted, d
}

func (p *Policy) rule(s Subject, repo string, a Actions) Ruling {
	if !ValidRepository(repo) {
		return Ruling{Reason: "invalid repository name"}
	}
	matches := func(r *rule) bool {
		return r.actions.Has(a) && matchAny(r.subjects, s) && r.repos.Match(repo)
	}
	for i := range p.rules {
		if r := &p.rules[i]; r.deny && matches(r) {
			return Ruling{Rule: r.name, Reason: "denied by rule"}
		}
	}
	if s.Kind == Anonymous && a != Pull {
		return Ruling{Reason: "anonymous clients may only pull"}
	}
	if s.Kind == Robot {
		for _, perm := range s.Scope {
			if perm.Actions.Has(a) && perm.Repositories.Match(repo) {
				return Ruling{Allowed: true, Rule: "robot:" + s.Name + " scope", Reason: "allowed by the robot's scope"}
			}
		}
		return Ruling{Reason: "outside the robot's scope"}
	}
	for i := range p.rules {
		if r := &p.rules[i]; !r.deny && matches(r) {
			return Ruling{Allowed: true, Rule: r.name, Reason: "allowed by rule"}
		}
	}
	if s.Kind == Anonymous && p.anonymousPull {
		return Ruling{Allowed: true, Rule: AnonymousPullRule, Reason: "anonymous pull is enabled"}
	}
	return Ruling{Reason: "no rule allows it"}
}

// Catalog decides whether the subject may list the repository catalog.
func (p *Policy) Catalog(s Subject) Ruling {
	if matchAny(p.catalog, s) {
		return Ruling{Allowed: true, Rule: "catalog", Reason: "listed in catalog"}
	}
	return Ruling{Reason: "not listed in catalog"}
}

// Admin decides whether the subject may use the management API (the scope
// registry:admin:*). Anonymous subjects never may.
func (p *Policy) Admin(s Subject) Ruling {
	if s.Kind != Anonymous && matchAny(p.admins, s) {
		return Ruling{Allowed: true, Rule: "admins", Reason: "listed in admins"}
	}
	return Ruling{Reason: "not listed in admins"}
}
