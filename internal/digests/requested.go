package digests

import (
	"context"

	"github.com/opencontainers/go-digest"
)

type requestedKey struct{}

// WithRequested returns ctx carrying the non-canonical digest a client put a
// manifest by, while the registry core stores it by its canonical digest.
func WithRequested(ctx context.Context, d digest.Digest) context.Context {
	return context.WithValue(ctx, requestedKey{}, d)
}

// Requested returns the digest stored by WithRequested, or "".
func Requested(ctx context.Context) digest.Digest {
	d, _ := ctx.Value(requestedKey{}).(digest.Digest)
	return d
}

// Canonical reports whether d uses the canonical algorithm.
func Canonical(d digest.Digest) bool { return d.Algorithm() == digest.Canonical }
