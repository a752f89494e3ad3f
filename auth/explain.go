package auth

import (
	"fmt"
	"strings"
)

// Explain evaluates one scope (repository:team/app:pull,push,
// registry:catalog:* or registry:admin:*) for the subject and returns a printable explanation
// naming the rule behind each action, for `registry policy explain`, and
// whether every action asked for is allowed. It returns an error for a
// malformed scope or an unknown action.
func (p *Policy) Explain(s Subject, scope string) (string, bool, error) {
	sc, err := ParseScope(scope)
	if err != nil {
		return "", false, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "subject:    %s", s)
	if len(s.Groups) > 0 {
		fmt.Fprintf(&b, " (groups: %s)", strings.Join(s.Groups, ", "))
	}
	b.WriteString("\n")
	switch sc.Type {
	case "registry":
		fmt.Fprintf(&b, "resource:   registry:%s\n", sc.Name)
		r := Ruling{Reason: "unknown registry resource"}
		switch sc.Name {
		case "catalog":
			r = p.Catalog(s)
		case "admin":
			r = p.Admin(s)
		}
		writeRuling(&b, "*", r)
		return b.String(), r.Allowed, nil
	case "repository":
	default:
		return "", false, fmt.Errorf("unknown resource type %q (want repository or registry)", sc.Type)
	}
	requested, err := ParseActions(sc.Actions...)
	if err != nil {
		return "", false, err
	}
	granted, d := p.Grant(s, sc.Name, requested)
	fmt.Fprintf(&b, "repository: %s\nrequested:  %s\ngranted:    %s\n", sc.Name, requested, granted)
	for _, r := range d.Rulings {
		writeRuling(&b, r.Action.String(), r.Ruling)
	}
	return b.String(), granted == requested, nil
}

func writeRuling(b *strings.Builder, action string, r Ruling) {
	verdict := "denied"
	if r.Allowed {
		verdict = "allowed"
	}
	by := "no rule matched"
	if !r.Allowed {
		by += " (default deny)"
	}
	if r.Rule != "" {
		by = fmt.Sprintf("rule %q", r.Rule)
	}
	fmt.Fprintf(b, "  %-7s %-8s %s: %s\n", action, verdict, by, r.Reason)
}

// ExplainTag is Explain for a tag change: it says whether the subject may
// apply op to repository:tag and which tag rule decided.
func (p *Policy) ExplainTag(s Subject, repository, tag string, op TagOp) string {
	r := p.TagDecision(s, repository, tag, op)
	var b strings.Builder
	fmt.Fprintf(&b, "subject:    %s\ntag:        %s:%s\n", s, repository, tag)
	writeRuling(&b, op.String(), r)
	return b.String()
}
