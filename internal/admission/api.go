package admission

import (
	"context"

	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/trust"
)

// Applies reports whether a trust or scan policy applies to repo, that is
// whether repo's images have a verdict.
func (g *Gate) Applies(repo string) bool { return g.mode(repo) != "" }

// Verdict returns repo@d's current verdict for the verdict API. It returns
// an error when the signatures could not be verified.
func (g *Gate) Verdict(ctx context.Context, repo string, d digest.Digest) (trust.Verdict, error) {
	return g.verify(ctx, "api", repo, d)
}
