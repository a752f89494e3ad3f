package auth

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/portcullis/portcullis/policy"
)

// Kind says what sort of client a Subject is.
type Kind uint8

// The kinds of subject. The zero Kind is anonymous.
const (
	Anonymous Kind = iota
	User
	Robot
)

// String returns anonymous, user or robot.
func (k Kind) String() string {
	switch k {
	case User:
		return "user"
	case Robot:
		return "robot"
	}
	return "anonymous"
}

// RobotPrefix starts the login name of a robot account: robot+NAME.
const RobotPrefix = "robot+"

// Subject is who is asking. The zero Subject is an anonymous client.
type Subject struct {
	Kind Kind
	// Name is the user or robot name; empty for anonymous.
	Name string
	// Groups lists the groups a user belongs to.
	Groups []string
	// Scope is a robot's own permission: a robot may do only what its scope
	// allows, further limited by deny rules. Ignored for users.
	Scope []Permission
}

// Permission allows actions on repositories matching any of the patterns.
type Permission struct {
	Repositories policy.Patterns
	Actions      Actions
}

// NewPermission parses repository patterns and action names.
func NewPermission(repositories, actions []string) (Permission, error) {
	var p Permission
	if len(repositories) == 0 {
		return p, fmt.Errorf("no repositories")
	}
	repos, err := policy.ParsePatterns(repositories)
	if err != nil {
		return p, err
	}
	p.Repositories = repos
	a, err := ParseActions(actions...)
	if err != nil {
		return p, err
	}
	if a == 0 {
		return p, fmt.Errorf("no actions")
	}
	p.Actions = a
	return p, nil
}

// String returns the subject as rules write it: user:NAME, robot:NAME or
// anonymous.
func (s Subject) String() string {
	if s.Kind == Anonymous {
		return "anonymous"
	}
	return s.Kind.String() + ":" + s.Name
}

// Login returns the name the subject logs in with and that tokens carry in
// their sub claim: NAME for users, robot+NAME for robots, "" for anonymous.
func (s Subject) Login() string {
	switch s.Kind {
	case User:
		return s.Name
	case Robot:
		return RobotPrefix + s.Name
	}
	return ""
}

// ParseSubject parses user:NAME, robot:NAME or anonymous into a Subject
// without groups (Policy.Resolve adds them). It returns an error for any
// other form.
func ParseSubject(s string) (Subject, error) {
	if s == "anonymous" {
		return Subject{}, nil
	}
	kind, name, ok := strings.Cut(s, ":")
	if ok && name != "" && !strings.ContainsAny(name, "*?[") {
		switch kind {
		case "user":
			return Subject{Kind: User, Name: name}, nil
		case "robot":
			return Subject{Kind: Robot, Name: name}, nil
		}
	}
	return Subject{}, fmt.Errorf("invalid subject %q (want user:NAME, robot:NAME or anonymous)", s)
}

// matcher is one subject term of a rule.
type matcher struct {
	kind string // user, group, robot, anonymous, authenticated
	name string // a path.Match glob for user, group, robot
}

func parseMatcher(s string) (matcher, error) {
	switch s {
	case "anonymous", "authenticated":
		return matcher{kind: s}, nil
	}
	kind, name, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return matcher{}, fmt.Errorf("invalid subject %q (want user:NAME, group:NAME, robot:NAME, anonymous or authenticated)", s)
	}
	switch kind {
	case "user", "group", "robot":
	default:
		return matcher{}, fmt.Errorf("unknown subject kind %q in %q", kind, s)
	}
	if _, err := path.Match(name, ""); err != nil {
		return matcher{}, fmt.Errorf("invalid subject name pattern %q", name)
	}
	return matcher{kind: kind, name: name}, nil
}

func (m matcher) match(s Subject) bool {
	glob := func(name string) bool {
		ok, err := path.Match(m.name, name)
		return err == nil && ok
	}
	switch m.kind {
	case "anonymous":
		return s.Kind == Anonymous
	case "authenticated":
		return s.Kind != Anonymous
	case "user":
		return s.Kind == User && glob(s.Name)
	case "robot":
		return s.Kind == Robot && glob(s.Name)
	case "group":
		return s.Kind == User && slices.ContainsFunc(s.Groups, glob)
	}
	return false
}

func (m matcher) String() string {
	if m.name == "" {
		return m.kind
	}
	return m.kind + ":" + m.name
}

func parseMatchers(ss []string) ([]matcher, error) {
	out := make([]matcher, 0, len(ss))
	for _, s := range ss {
		m, err := parseMatcher(s)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func matchAny(ms []matcher, s Subject) bool {
	for _, m := range ms {
		if m.match(s) {
			return true
		}
	}
	return false
}
