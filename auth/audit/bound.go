package audit

import (
	"strconv"
	"unicode/utf8"
)

// truncated marks a field cut to the Log's field bound; the number of bytes
// left out follows it.
const truncated = "…[truncated "

// bound returns s cut to at most max bytes (on a UTF-8 boundary) followed
// by a marker saying how many bytes were left out; s itself when it fits.
func bound(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + truncated + strconv.Itoa(len(s)-cut) + " bytes]"
}

// bounded returns e with every string field cut to maxField bytes and at
// most maxScopes scopes; ScopeCount then says how many there were.
func bounded(e Event, maxField, maxScopes int) Event {
	for _, f := range []*string{
		&e.Kind, &e.Subject, &e.Addr, &e.Action, &e.Repository, &e.Tag, &e.Digest,
		&e.Result, &e.Rule, &e.Reason, &e.RequestID, &e.TokenID,
	} {
		*f = bound(*f, maxField)
	}
	if len(e.Scope) > maxScopes {
		e.ScopeCount = len(e.Scope)
		e.Scope = e.Scope[:maxScopes]
	}
	if e.Scope != nil {
		scopes := make([]string, len(e.Scope))
		for i, s := range e.Scope {
			scopes[i] = bound(s, maxField)
		}
		e.Scope = scopes
	}
	return e
}
