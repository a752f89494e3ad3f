package auth

import (
	"fmt"
	"strings"
)

// Scope is one resource scope of the token specification:
// TYPE[(CLASS)]:NAME:ACTION[,ACTION...], e.g. repository:team/app:pull,push
// or registry:catalog:*.
type Scope struct {
	Type    string
	Class   string
	Name    string
	Actions []string
}

// ParseScope parses one scope. The name may itself contain colons; the
// type is before the first and the actions after the last. It returns an
// error for a scope with an empty part or a repository scope with an
// invalid repository name.
func ParseScope(s string) (Scope, error) {
	typ, rest, ok := strings.Cut(s, ":")
	i := strings.LastIndexByte(rest, ':')
	if !ok || i < 0 {
		return Scope{}, fmt.Errorf("invalid scope %q: want TYPE:NAME:ACTIONS", s)
	}
	sc := Scope{Type: typ, Name: rest[:i]}
	if open := strings.IndexByte(typ, '('); open >= 0 && strings.HasSuffix(typ, ")") {
		sc.Type, sc.Class = typ[:open], typ[open+1:len(typ)-1]
	}
	if acts := rest[i+1:]; acts != "" {
		sc.Actions = strings.Split(acts, ",")
	}
	if sc.Type == "" || sc.Name == "" || len(sc.Actions) == 0 {
		return Scope{}, fmt.Errorf("invalid scope %q: want TYPE:NAME:ACTIONS", s)
	}
	if sc.Type == "repository" && !ValidRepository(sc.Name) {
		return Scope{}, fmt.Errorf("invalid scope %q: invalid repository name", s)
	}
	return sc, nil
}

// String formats the scope as the token specification writes it.
func (s Scope) String() string {
	typ := s.Type
	if s.Class != "" {
		typ += "(" + s.Class + ")"
	}
	return typ + ":" + s.Name + ":" + strings.Join(s.Actions, ",")
}
