package auth

import (
	"fmt"
	"strings"
)

// Actions is a set of repository actions.
type Actions uint8

// The repository actions of the distribution token specification.
const (
	Pull Actions = 1 << iota
	Push
	Delete

	// AllActions is pull, push and delete (the "*" of a rule).
	AllActions = Pull | Push | Delete
)

// actionNames lists each single action in canonical order.
var actionNames = [...]struct {
	a    Actions
	name string
}{{Pull, "pull"}, {Push, "push"}, {Delete, "delete"}}

// ParseActions parses action names (pull, push, delete, *). It returns an
// error naming the first unknown action.
func ParseActions(names ...string) (Actions, error) {
	var set Actions
	for _, n := range names {
		a, ok := parseAction(n)
		if !ok {
			return 0, fmt.Errorf("unknown action %q", n)
		}
		set |= a
	}
	return set, nil
}

func parseAction(n string) (Actions, bool) {
	switch n {
	case "pull":
		return Pull, true
	case "push":
		return Push, true
	case "delete":
		return Delete, true
	case "*":
		return AllActions, true
	}
	return 0, false
}

// Has reports whether every action in b is in a.
func (a Actions) Has(b Actions) bool { return a&b == b }

// Names returns the actions in canonical order (pull, push, delete).
func (a Actions) Names() []string {
	var out []string
	for _, n := range actionNames {
		if a.Has(n.a) {
			out = append(out, n.name)
		}
	}
	return out
}

// Each returns the single actions of a in canonical order.
func (a Actions) Each() []Actions {
	var out []Actions
	for _, n := range actionNames {
		if a.Has(n.a) {
			out = append(out, n.a)
		}
	}
	return out
}

// String returns "pull,push" style text, or "none".
func (a Actions) String() string {
	if a == 0 {
		return "none"
	}
	return strings.Join(a.Names(), ",")
}
