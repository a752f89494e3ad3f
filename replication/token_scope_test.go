package replication

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
)

// TestWriterAsksPushTokens: once a remote was written to, a repository's
// pull token is asked for with push, so a copy into a new repository costs
// the remote one token (one password check), not two.
func TestWriterAsksPushTokens(t *testing.T) {
	t.Parallel()
	src := newUpstream(t, authNone, true)
	dst := newUpstream(t, authBearer, true)
	dst.setCredentials("robot", "secret")
	src.seed("prod/a", "v1", randomImage(t))
	src.seed("prod/b", "v1", randomImage(t))
	user, pass := writeCredentials(t, "robot", "secret")
	to := newRemote(t, dst, Options{Name: "b", UsernameFile: user, PasswordFile: pass})
	c := NewCopier(newRemote(t, src, Options{Name: "a"}), to)
	for _, repo := range []string{"prod/a", "prod/b"} {
		if _, err := c.Copy(t.Context(), repo, repo, "v1"); err != nil {
			t.Fatalf("copy %s: %v", repo, err)
		}
	}
	// A read, now that the remote is a destination, uses the push token.
	if _, err := to.HeadManifest(t.Context(), "prod/a", "v1"); err != nil {
		t.Fatal(err)
	}
	dst.mu.Lock()
	defer dst.mu.Unlock()
	want := []string{"repository:prod/a:pull", "repository:prod/a:pull,push", "repository:prod/b:pull,push"}
	if diff := cmp.Diff(want, dst.scopes); diff != "" {
		t.Errorf("token scopes asked for (-want +got):\n%s", diff)
	}
}

// realmRewriter sends a token challenge's realm to another server.
type realmRewriter struct {
	http.ResponseWriter
	from, to string
}

func (w realmRewriter) WriteHeader(status int) {
	if h := w.Header().Get("WWW-Authenticate"); h != "" {
		w.Header().Set("WWW-Authenticate", strings.ReplaceAll(h, w.from, w.to))
	}
	w.ResponseWriter.WriteHeader(status)
}

// TestPushScopeRefusedFallsBackToPull: a token service that refuses a push
// scope outright still gives a writer the pull tokens it needs.
func TestPushScopeRefusedFallsBackToPull(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authBearer, true)
	up.setCredentials("robot", "secret")
	up.seed("prod/a", "v1", randomImage(t))
	var front *httptest.Server
	front = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" && strings.Contains(r.URL.RawQuery, "push") {
			writeError(w, http.StatusForbidden, "DENIED", "no push here")
			return
		}
		up.ServeHTTP(realmRewriter{ResponseWriter: w, from: up.srv.URL, to: front.URL}, r)
	}))
	t.Cleanup(front.Close)
	user, pass := writeCredentials(t, "robot", "secret")
	rem, err := New(Options{Name: "b", URL: front.URL, UsernameFile: user, PasswordFile: pass})
	if err != nil {
		t.Fatal(err)
	}
	// A write first (its token comes from the challenge, for pull): the
	// remote is now one this client writes to.
	if err := rem.UploadBlob(t.Context(), "prod/b", digest.FromString("x"), 1, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := rem.HeadManifest(t.Context(), "prod/a", "v1"); err != nil {
		t.Errorf("HeadManifest after the push scope was refused: %v", err)
	}
}
