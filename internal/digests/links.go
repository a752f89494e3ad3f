package digests

import (
	"context"
	"errors"
	"fmt"
	"strings"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
)

const repositoriesRoot = "/docker/registry/v2/repositories"

// Links reads and writes distribution's repository links.
type Links struct {
	driver storagedriver.StorageDriver
}

// NewLinks returns link access over driver.
func NewLinks(driver storagedriver.StorageDriver) (*Links, error) {
	if driver == nil {
		return nil, errors.New("digest links: nil storage driver")
	}
	return &Links{driver: driver}, nil
}

// Paths of distribution's storage layout, for a valid repository name and
// digest (nothing to clean, so built without path.Join: manifest and blob
// reads build them on every request).

// BlobDataPath is the path of blob d's data.
func BlobDataPath(d digest.Digest) string {
	enc := d.Encoded()
	return "/docker/registry/v2/blobs/" + d.Algorithm().String() + "/" + enc[:2] + "/" + enc + "/data"
}

// LayerLinkPath is the link that makes blob d part of repo.
func LayerLinkPath(repo string, d digest.Digest) string {
	return repositoriesRoot + "/" + repo + "/_layers/" + d.Algorithm().String() + "/" + d.Encoded() + "/link"
}

// RevisionLinkPath is the link that makes manifest d part of repo.
func RevisionLinkPath(repo string, d digest.Digest) string {
	return repositoriesRoot + "/" + repo + "/_manifests/revisions/" + d.Algorithm().String() + "/" + d.Encoded() + "/link"
}

// TagLinkPath is the link that holds what repo's tag points at.
func TagLinkPath(repo, tag string) string {
	return repositoriesRoot + "/" + repo + "/_manifests/tags/" + tag + "/current/link"
}

// ErrNoLink is returned when a repository has no link for a digest.
var ErrNoLink = errors.New("no link for digest")

// LayerTarget returns the digest repo's blob link for d points at. It returns
// ErrNoLink when the repository has no such link.
func (l *Links) LayerTarget(ctx context.Context, repo string, d digest.Digest) (digest.Digest, error) {
	b, err := l.driver.GetContent(ctx, LayerLinkPath(repo, d))
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return "", ErrNoLink
	}
	if err != nil {
		return "", fmt.Errorf("read blob link %s: %w", d, err)
	}
	target, err := digest.Parse(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("blob link %s: %w", d, err)
	}
	return target, nil
}

// LinkLayer makes repo's blob link for alias point at target.
func (l *Links) LinkLayer(ctx context.Context, repo string, alias, target digest.Digest) error {
	if err := l.driver.PutContent(ctx, LayerLinkPath(repo, alias), []byte(target)); err != nil {
		return fmt.Errorf("link blob %s: %w", alias, err)
	}
	return nil
}

// LinkRevision makes repo's manifest revision link for alias point at target.
func (l *Links) LinkRevision(ctx context.Context, repo string, alias, target digest.Digest) error {
	if err := l.driver.PutContent(ctx, RevisionLinkPath(repo, alias), []byte(target)); err != nil {
		return fmt.Errorf("link manifest %s: %w", alias, err)
	}
	return nil
}
