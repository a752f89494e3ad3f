package trust

import (
	"context"
	"errors"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrNotFound is what Content returns (possibly wrapped) when a manifest,
// blob or tag does not exist in the repository. The Verifier treats it as
// "no signature here"; every other error aborts verification.
var ErrNotFound = errors.New("not found")

// ErrTooLarge is what Content.Blob returns (possibly wrapped) when the blob
// is larger than the limit asked for. The signature it held is invalid.
var ErrTooLarge = errors.New("too large")

// Content is the Verifier's read-only view of a registry's storage, scoped by
// repository. Implementations must return only content that belongs to repo;
// the Verifier checks every manifest and blob against its digest.
type Content interface {
	// Manifest returns the manifest d of repo and its media type, or an error
	// wrapping ErrNotFound.
	Manifest(ctx context.Context, repo string, d digest.Digest) (mediaType string, payload []byte, err error)
	// Blob returns the blob d of repo, an error wrapping ErrNotFound, or one
	// wrapping ErrTooLarge when it is larger than max bytes.
	Blob(ctx context.Context, repo string, d digest.Digest, max int64) ([]byte, error)
	// Referrers returns the descriptors of the manifests in repo whose subject
	// is subject, with their artifactType set, as the OCI referrers API does.
	// No referrers is an empty list, not an error.
	Referrers(ctx context.Context, repo string, subject digest.Digest) ([]v1.Descriptor, error)
	// ResolveTag returns the digest tag points to in repo, or an error
	// wrapping ErrNotFound.
	ResolveTag(ctx context.Context, repo, tag string) (digest.Digest, error)
}
