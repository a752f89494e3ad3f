package app_test

import (
	"net/http"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/auth/token"
	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/testenv"
)

// TestBlobReadAuthBeforeNotFound: with auth on, an anonymous HEAD or GET
// of a blob gets the challenge whether or not the repository links the
// blob: the front handler's own 404 for an unlinked blob comes after the
// pull check, so a caller without the right learns nothing of what exists.
func TestBlobReadAuthBeforeNotFound(t *testing.T) {
	t.Parallel()
	key := filepath.Join(t.TempDir(), "key.pem")
	if err := token.GenerateKeyFile(key); err != nil {
		t.Fatal(err)
	}
	reg := testenv.Start(t, func(c *config.Config) {
		c.Auth.Enabled = true
		c.Auth.Token.SigningKeyFile = key
	})
	unknown := digest.FromString("nothing links this")
	for _, repo := range []string{"team/app", "nobody/here"} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			req, err := http.NewRequest(method, reg.URL+"/v2/"+repo+"/blobs/"+unknown.String(), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("anonymous %s of an unlinked blob in %s: %d, challenge %q; want 401 with a challenge",
					method, repo, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
		}
	}
}
