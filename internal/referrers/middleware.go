package referrers

import (
	"context"
	"errors"
	"fmt"

	"github.com/distribution/distribution/v3"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Repository wraps a distribution repository so that its manifest service
// keeps the referrers index up to date.
type Repository struct {
	distribution.Repository
	index *Index
}

// Wrap returns repo with referrers indexing on manifest writes.
func Wrap(repo distribution.Repository, index *Index) *Repository {
	return &Repository{Repository: repo, index: index}
}

// Manifests returns the wrapped manifest service.
func (r *Repository) Manifests(ctx context.Context, options ...distribution.ManifestServiceOption) (distribution.ManifestService, error) {
	ms, err := r.Repository.Manifests(ctx, options...)
	if err != nil {
		return nil, err
	}
	return &manifestService{ManifestService: ms, repo: r.Named().Name(), index: r.index}, nil
}

type manifestService struct {
	distribution.ManifestService
	repo  string
	index *Index
}

// Put stores the manifest, then records it as a referrer of its subject. If
// the index cannot be written the client gets an error and may retry: the
// manifest write is idempotent.
func (m *manifestService) Put(ctx context.Context, manifest distribution.Manifest, options ...distribution.ManifestServiceOption) (digest.Digest, error) {
	dgst, err := m.ManifestService.Put(ctx, manifest, options...)
	if err != nil {
		return dgst, err
	}
	mediaType, payload, err := manifest.Payload()
	if err != nil {
		return dgst, fmt.Errorf("read manifest payload: %w", err)
	}
	subject, desc, err := Describe(mediaType, payload)
	if err != nil || subject == "" {
		return dgst, nil // distribution accepted it; nothing refers to anything
	}
	desc.Digest = dgst
	if err := m.index.Add(ctx, m.repo, subject, desc); err != nil {
		return dgst, err
	}
	return dgst, nil
}

// Delete removes the manifest and its entry in the referrers index.
func (m *manifestService) Delete(ctx context.Context, dgst digest.Digest) error {
	var subject digest.Digest
	if mf, err := m.ManifestService.Get(ctx, dgst); err == nil {
		if _, payload, err := mf.Payload(); err == nil {
			subject = SubjectOf(payload)
		}
	}
	if err := m.ManifestService.Delete(ctx, dgst); err != nil {
		return err
	}
	if subject != "" {
		return m.index.Remove(ctx, m.repo, subject, dgst)
	}
	return nil
}

// Rebuild indexes every manifest of repo and marks the index complete.
func (x *Index) Rebuild(ctx context.Context, repo distribution.Repository) error {
	ms, err := repo.Manifests(ctx)
	if err != nil {
		return fmt.Errorf("rebuild referrers: %w", err)
	}
	if w, ok := ms.(*manifestService); ok {
		ms = w.ManifestService
	}
	en, ok := ms.(distribution.ManifestEnumerator)
	if !ok {
		return errors.New("rebuild referrers: manifest service cannot enumerate")
	}
	name := repo.Named().Name()
	// A manifest pushed by a non-canonical digest (sha512) is stored under
	// both digests; list it once, by the digest its client used.
	type entry struct {
		subject digest.Digest
		desc    v1.Descriptor
	}
	found := map[digest.Digest]entry{} // by canonical digest
	err = en.Enumerate(ctx, func(dgst digest.Digest) error {
		mf, err := ms.Get(ctx, dgst)
		if err != nil {
			return nil // unreadable or unknown type: not a referrer we can list
		}
		mediaType, payload, err := mf.Payload()
		if err != nil {
			return nil
		}
		subject, desc, err := Describe(mediaType, payload)
		if err != nil || subject == "" {
			return nil
		}
		canonical := desc.Digest
		if prev, ok := found[canonical]; ok && prev.desc.Digest != canonical {
			return nil
		}
		desc.Digest = dgst
		found[canonical] = entry{subject: subject, desc: desc}
		return nil
	})
	for _, e := range found {
		if err == nil {
			err = x.Add(ctx, name, e.subject, e.desc)
		}
	}
	var unknown distribution.ErrRepositoryUnknown
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &unknown) || errors.As(err, &nf) {
		// No manifests yet: writing the marker would create the repository.
		return nil
	}
	if err != nil {
		return fmt.Errorf("rebuild referrers of %s: %w", name, err)
	}
	return x.MarkComplete(ctx, name)
}

var _ distribution.ManifestEnumerator = (*manifestService)(nil)

// Enumerate calls ingester with the digest of each manifest of the
// repository, when the wrapped manifest service can list them
// (distribution.ManifestEnumerator); the scanner's reconcile pass walks
// untagged manifests through it.
func (m *manifestService) Enumerate(ctx context.Context, ingester func(digest.Digest) error) error {
	en, ok := m.ManifestService.(distribution.ManifestEnumerator)
	if !ok {
		return errors.New("manifest service cannot enumerate")
	}
	return en.Enumerate(ctx, ingester)
}
