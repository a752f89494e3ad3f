package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/trust"
)

// repositories opens repositories by name.
type repositories interface {
	Repository(ctx context.Context, name reference.Named) (distribution.Repository, error)
}

// referrerLister lists a subject's referrers.
type referrerLister interface {
	List(ctx context.Context, name string, subject digest.Digest) ([]v1.Descriptor, error)
}

// Content is trust.Content over the registry's own storage.
type Content struct {
	Repos repositories
	Refs  referrerLister
}

var _ trust.Content = (*Content)(nil)

func (c *Content) repo(ctx context.Context, name string) (distribution.Repository, error) {
	named, err := reference.WithName(name)
	if err != nil {
		return nil, fmt.Errorf("repository %q: %w", name, err)
	}
	return c.Repos.Repository(ctx, named)
}

// Manifest returns a manifest's media type and bytes.
func (c *Content) Manifest(ctx context.Context, repo string, d digest.Digest) (string, []byte, error) {
	r, err := c.repo(ctx, repo)
	if err != nil {
		return "", nil, err
	}
	ms, err := r.Manifests(ctx)
	if err != nil {
		return "", nil, err
	}
	m, err := ms.Get(ctx, d)
	if err != nil {
		if notFound(err) {
			return "", nil, fmt.Errorf("manifest %s: %w", d, trust.ErrNotFound)
		}
		return "", nil, err
	}
	mt, payload, err := m.Payload()
	return mt, payload, err
}

// Blob returns a small blob, refusing one over max bytes.
func (c *Content) Blob(ctx context.Context, repo string, d digest.Digest, max int64) ([]byte, error) {
	r, err := c.repo(ctx, repo)
	if err != nil {
		return nil, err
	}
	bs := r.Blobs(ctx)
	desc, err := bs.Stat(ctx, d)
	if err != nil {
		if notFound(err) {
			return nil, fmt.Errorf("blob %s: %w", d, trust.ErrNotFound)
		}
		return nil, err
	}
	if desc.Size > max {
		return nil, fmt.Errorf("blob %s is %d bytes: %w", d, desc.Size, trust.ErrTooLarge)
	}
	return bs.Get(ctx, d)
}

// Exists reports whether repo has the manifest d; the error is a failure
// to read storage.
func (c *Content) Exists(ctx context.Context, repo string, d digest.Digest) (bool, error) {
	r, err := c.repo(ctx, repo)
	if err != nil {
		return false, err
	}
	ms, err := r.Manifests(ctx)
	if err != nil {
		return false, err
	}
	ok, err := ms.Exists(ctx, d)
	if err != nil && notFound(err) {
		return false, nil
	}
	return ok, err
}

// Referrers lists the subject's referrers.
func (c *Content) Referrers(ctx context.Context, repo string, subject digest.Digest) ([]v1.Descriptor, error) {
	return c.Refs.List(ctx, repo, subject)
}

// ResolveTag returns the digest a tag points to.
func (c *Content) ResolveTag(ctx context.Context, repo, tag string) (digest.Digest, error) {
	r, err := c.repo(ctx, repo)
	if err != nil {
		return "", err
	}
	desc, err := r.Tags(ctx).Get(ctx, tag)
	if err != nil {
		if notFound(err) {
			return "", fmt.Errorf("tag %s: %w", tag, trust.ErrNotFound)
		}
		return "", err
	}
	return desc.Digest, nil
}

func notFound(err error) bool {
	var tagUnknown distribution.ErrTagUnknown
	var repoUnknown distribution.ErrRepositoryUnknown
	var revUnknown distribution.ErrManifestUnknownRevision
	var manUnknown distribution.ErrManifestUnknown
	return errors.Is(err, distribution.ErrBlobUnknown) || errors.As(err, &tagUnknown) ||
		errors.As(err, &repoUnknown) || errors.As(err, &revUnknown) || errors.As(err, &manUnknown)
}

// Parents returns the indexes tagged in repo that list d: a signature on an
// index covers its children, and clients pull a multi-platform image's
// children by digest. Only tagged indexes are searched.
func (c *Content) Parents(ctx context.Context, repo string, d digest.Digest) ([]digest.Digest, error) {
	r, err := c.repo(ctx, repo)
	if err != nil {
		return nil, err
	}
	tags, err := r.Tags(ctx).All(ctx)
	if err != nil {
		if notFound(err) {
			return nil, nil
		}
		return nil, err
	}
	ms, err := r.Manifests(ctx)
	if err != nil {
		return nil, err
	}
	seen := map[digest.Digest]bool{}
	var parents []digest.Digest
	for _, tag := range tags {
		desc, err := r.Tags(ctx).Get(ctx, tag)
		if err != nil || seen[desc.Digest] || desc.Digest == d {
			continue
		}
		seen[desc.Digest] = true
		m, err := ms.Get(ctx, desc.Digest)
		if err != nil {
			continue
		}
		for _, ref := range listedManifests(m) {
			if ref == d {
				parents = append(parents, desc.Digest)
				break
			}
		}
	}
	return parents, nil
}

// listedManifests returns the manifests an index or manifest list names.
func listedManifests(m distribution.Manifest) []digest.Digest {
	mt, payload, err := m.Payload()
	if err != nil || (mt != v1.MediaTypeImageIndex && mt != "application/vnd.docker.distribution.manifest.list.v2+json") {
		return nil
	}
	var idx v1.Index
	if json.Unmarshal(payload, &idx) != nil {
		return nil
	}
	out := make([]digest.Digest, 0, len(idx.Manifests))
	for _, m := range idx.Manifests {
		out = append(out, m.Digest)
	}
	return out
}
