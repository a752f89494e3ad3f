package replication

import (
	"testing"

	"github.com/google/go-cmp/cmp"
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
