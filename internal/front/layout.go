package front

import (
	"context"
	"errors"

	"github.com/distribution/distribution/v3"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	"github.com/portcullis/portcullis/internal/digests"
)

// layout reads the links of distribution's storage layout straight from
// the driver, answering as distribution's tag and manifest stores do:
//
//	/docker/registry/v2/
//	├── blobs/<alg>/<first two hex>/<hex>/data
//	└── repositories/<name>/
//	    ├── _layers/<alg>/<hex>/link         "sha256:…", the repository has the blob
//	    └── _manifests/
//	        ├── tags/<tag>/current/link      "sha256:…", the tag's manifest
//	        └── revisions/<alg>/<hex>/link   "sha256:…", the repository has it
//
// A manifest read by tag makes three storage reads (tag link, revision
// link's stat, blob's stat) on every request, whichever replica moved the tag last;
// through distribution's stores the same reads cost a repository, a tag
// store and a manifest store built per request, a path built by pathFor
// and a digest checked by regexp per link, and a logger per call.
type layout struct {
	driver storagedriver.StorageDriver
}

// tag returns the manifest tag of repo points at; distribution.ErrTagUnknown
// when repo has no such tag.
func (l layout) tag(ctx context.Context, repo, tag string) (digest.Digest, error) {
	d, err := l.readlink(ctx, digests.TagLinkPath(repo, tag))
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return "", distribution.ErrTagUnknown{Tag: tag}
	}
	return d, err
}

// hasManifest reports whether repo has manifest d: its revision link, and
// the blob the link names. A sha256 revision link names its own digest
// (distribution writes it so, in one atomic write): its stat is enough.
func (l layout) hasManifest(ctx context.Context, repo string, d digest.Digest) (bool, error) {
	link := digests.RevisionLinkPath(repo, d)
	target := d
	var err error
	if d.Algorithm() == digest.SHA256 {
		_, err = l.driver.Stat(ctx, link)
	} else {
		target, err = l.readlink(ctx, link)
	}
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	fi, err := l.driver.Stat(ctx, digests.BlobDataPath(target))
	switch {
	case errors.As(err, &nf):
		return false, nil
	case err != nil:
		return false, err
	}
	return !fi.IsDir(), nil
}

// blobSize returns the size of blob d of repo, as distribution's blob store
// finds it for a Stat: the repository's link to the blob, then the blob's
// data. It returns false when repo has no link to d (unlinked true: all
// distribution reads of the blob before it answers 404), when the link
// names another digest (distribution then answers for that one), when the
// data is missing or a directory, and on a storage error.
func (l layout) blobSize(ctx context.Context, repo string, d digest.Digest) (size int64, ok, unlinked bool) {
	target, err := l.readlink(ctx, digests.LayerLinkPath(repo, d))
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return 0, false, true
	}
	if err != nil || target != d {
		return 0, false, false
	}
	fi, err := l.driver.Stat(ctx, digests.BlobDataPath(d))
	if err != nil || fi.IsDir() {
		return 0, false, false
	}
	return fi.Size(), true, false
}

// readlink returns the digest a link holds.
func (l layout) readlink(ctx context.Context, path string) (digest.Digest, error) {
	b, err := l.driver.GetContent(ctx, path)
	if err != nil {
		return "", err
	}
	return parseLinkDigest(string(b))
}

// parseLinkDigest parses s as digest.Parse does, a sha256 digest (what links
// hold) without a regexp.
func parseLinkDigest(s string) (digest.Digest, error) {
	const prefix = "sha256:"
	if len(s) != len(prefix)+64 || s[:len(prefix)] != prefix {
		return digest.Parse(s)
	}
	for _, c := range []byte(s[len(prefix):]) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return digest.Parse(s)
		}
	}
	return digest.Digest(s), nil
}
