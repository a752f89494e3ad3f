package replication

import (
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
)

// Grammars of the OCI distribution specification.
var (
	repoPattern = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	})
	tagPattern = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`) })
)

// checkRepo fails when repo is not a repository name.
func checkRepo(repo string) error {
	if len(repo) > 255 || !repoPattern().MatchString(repo) {
		return fmt.Errorf("invalid repository name %q", clean(repo))
	}
	return nil
}

// parseRef splits a manifest reference into a tag or a digest.
func parseRef(ref string) (tag string, d digest.Digest, err error) {
	if strings.Contains(ref, ":") {
		d, err := digest.Parse(ref)
		if err != nil {
			return "", "", fmt.Errorf("invalid digest %q: %w", clean(ref), err)
		}
		return "", d, nil
	}
	if !tagPattern().MatchString(ref) {
		return "", "", fmt.Errorf("invalid tag %q", clean(ref))
	}
	return ref, "", nil
}

// pullScope is the token scope for reading repo.
func pullScope(repo string) string { return "repository:" + repo + ":pull" }

// repoURL is the URL of an API path below /v2/<repo>/.
func (r *Remote) repoURL(repo, rest string) string { return r.base + "/v2/" + repo + "/" + rest }
