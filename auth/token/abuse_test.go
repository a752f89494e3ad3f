package token

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/auth/audit"
)

// TestAuditBounded checks that no request can make the audit log grow
// without bound: long scopes, huge credentials, many attempts.
func TestAuditBounded(t *testing.T) {
	t.Parallel()
	// 64 scopes with 255-character names, no credentials.
	e := newEnv(t, envOptions{})
	long := make([]string, maxScopes)
	for i := range long {
		long[i] = "repository:team/" + strings.Repeat(string(rune('a'+i%26)), 240) + "-" + string(rune('a'+i/26)) + ":pull,push,delete"
	}
	if s, r := e.getToken("", "", "198.51.100.1", scopes(long...)); s != http.StatusOK {
		t.Fatalf("64 long scopes: %d %+v", s, r)
	}
	if n := e.audit.len(); n > 16<<10 {
		t.Errorf("64 long scopes wrote %d bytes of audit lines", n)
	}
	// More scopes than allowed: 400, saying why.
	if s, r := e.getToken("", "", "198.51.100.1", scopes(append(long, "repository:x:pull")...)); s != http.StatusBadRequest || !strings.Contains(r.Errors[0].Message, "more than 64 scopes") {
		t.Errorf("65 scopes: %d %+v", s, r)
	}

	// A 500 KB username: the normal failure, a bounded line, fast.
	e = newEnv(t, envOptions{})
	start := time.Now()
	s, r := e.getToken(strings.Repeat("u", 500<<10), "pw", "198.51.100.2", nil)
	if s != http.StatusUnauthorized || r.Error != "invalid_grant" {
		t.Errorf("500 KB username: %d %+v", s, r)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("500 KB username took %s", d)
	}
	if n := e.audit.len(); n > 2<<10 {
		t.Errorf("500 KB username wrote %d bytes of audit lines", n)
	}
	// A 500 KB password likewise.
	if s, _ := e.getToken("alice", strings.Repeat("p", 500<<10), "198.51.100.2", nil); s != http.StatusUnauthorized {
		t.Errorf("500 KB password: %d", s)
	}

	// 1000 failed attempts from one address: the audit lines are bounded by
	// the per-address rate, and a summary counts the rest.
	e = newEnv(t, envOptions{})
	const attacker = "203.0.113.9"
	for i := range 1000 {
		e.getToken(strings.Repeat("x", 1000)+string(rune('a'+i%26)), "guess", attacker, nil)
	}
	e.clock.Advance(time.Minute)
	e.getToken("alice", "guess", attacker, nil)
	lines, suppressed := 0, 0
	for _, ev := range e.audit.events(t) {
		if ev.Addr == attacker {
			lines++
			suppressed += ev.Suppressed
		}
	}
	if lines > audit.DefaultBurst+2 {
		t.Errorf("1000 failed attempts wrote %d audit lines, want at most %d", lines, audit.DefaultBurst+2)
	}
	if lines+suppressed-1 != 1001 {
		t.Errorf("%d lines and %d suppressed, want 1001 attempts accounted for", lines, suppressed)
	}
}

// TestLongCredentialsCountAsFailures checks that over-long credentials
// still count against the address's rate limit.
func TestLongCredentialsCountAsFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	const addr = "203.0.113.10"
	for range 5 {
		e.getToken(strings.Repeat("u", 2000), "pw", addr, url.Values{})
	}
	if s, _ := e.getToken("alice", "alice-password", addr, nil); s != http.StatusTooManyRequests {
		t.Errorf("right password after five over-long attempts: %d, want 429", s)
	}
}
