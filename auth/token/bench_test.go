package token

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/auth"
)

// BenchmarkVerify measures what every registry request pays: Authorized
// on a request carrying a valid ES256 token, the first time (cold: the
// signature is checked) and again (warm: the verified-token cache).
func BenchmarkVerify(b *testing.B) {
	b.Run("cold", func(b *testing.B) { benchVerify(b, -1) })
	b.Run("warm", func(b *testing.B) { benchVerify(b, 0) })
}

func benchVerify(b *testing.B, cacheSize int) {
	e := newEnv(b, envOptions{cacheSize: cacheSize})
	now := e.clock.Now()
	c := e.svc.claims(e.policy.User("alice"), now, now.Add(5*time.Minute))
	c.Access = []ResourceActions{{Type: "repository", Name: "team/app", Actions: []string{"pull", "push"}}}
	tok, err := e.keys.sign(c)
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPut, "/v2/team/app/blobs/uploads/", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	access := []auth.Access{
		{Resource: auth.Resource{Type: "repository", Name: "team/app"}, Action: "pull"},
		{Resource: auth.Resource{Type: "repository", Name: "team/app"}, Action: "push"},
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.ctl.Authorized(r, access...); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIssue measures the token service without bcrypt: an anonymous
// GET for one public repository, policy, signing and JSON included.
func BenchmarkIssue(b *testing.B) {
	e := newEnv(b, envOptions{})
	q := url.Values{"service": {testService}, "scope": {"repository:public/app:pull"}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w := httptest.NewRecorder()
		e.svc.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/token?"+q.Encode(), nil))
		if w.Code != http.StatusOK {
			b.Fatal(w.Code)
		}
	}
}
