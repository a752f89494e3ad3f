package gc

import (
	"context"
	"errors"

	"github.com/distribution/distribution/v3"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Wrap returns repo (named name) with its existence checks and writes
// vouching, as the front handler's requests do, for the registry's own
// writers (the scanner, the caches), which store content without going
// through the front handler. A blob being deleted answers as unknown to
// a Stat, and a write of content being deleted waits for the deletion.
func (m *Marks) Wrap(name string, repo distribution.Repository) distribution.Repository {
	if m == nil {
		return repo
	}
	return &vouchingRepo{Repository: repo, m: m, name: name}
}

type vouchingRepo struct {
	distribution.Repository
	m    *Marks
	name string
}

func (r *vouchingRepo) Blobs(ctx context.Context) distribution.BlobStore {
	return &vouchingBlobs{BlobStore: r.Repository.Blobs(ctx), r: r}
}

func (r *vouchingRepo) Manifests(ctx context.Context, options ...distribution.ManifestServiceOption) (distribution.ManifestService, error) {
	ms, err := r.Repository.Manifests(ctx, options...)
	if err != nil {
		return nil, err
	}
	v := &vouchingManifests{ManifestService: ms, r: r}
	if en, ok := ms.(distribution.ManifestEnumerator); ok {
		return &enumeratingManifests{vouchingManifests: v, en: en}, nil
	}
	return v, nil
}

// vouch runs a vouch as one request of the replica, and remembers it:
// the registry's own writers are trusted.
func (r *vouchingRepo) vouch(ctx context.Context, v Vouch) error {
	v.Repository = r.name
	done := r.m.Begin()
	defer done()
	if err := r.m.Vouch(ctx, v); err != nil {
		return err
	}
	r.m.Remember(v)
	return nil
}

type vouchingBlobs struct {
	distribution.BlobStore
	r *vouchingRepo
}

func (b *vouchingBlobs) Stat(ctx context.Context, d digest.Digest) (v1.Descriptor, error) {
	err := b.r.vouch(ctx, Vouch{Blobs: []digest.Digest{d}})
	var te *TombstonedError
	if errors.As(err, &te) {
		return v1.Descriptor{}, distribution.ErrBlobUnknown
	}
	if err != nil {
		return v1.Descriptor{}, err
	}
	return b.BlobStore.Stat(ctx, d)
}

func (b *vouchingBlobs) Put(ctx context.Context, mediaType string, p []byte) (v1.Descriptor, error) {
	if err := b.r.vouch(ctx, Vouch{Blobs: []digest.Digest{digest.FromBytes(p)}}); err != nil {
		return v1.Descriptor{}, err
	}
	return b.BlobStore.Put(ctx, mediaType, p)
}

func (b *vouchingBlobs) Create(ctx context.Context, options ...distribution.BlobCreateOption) (distribution.BlobWriter, error) {
	w, err := b.BlobStore.Create(ctx, options...)
	if err != nil {
		return nil, err
	}
	return &vouchingWriter{BlobWriter: w, r: b.r}, nil
}

type vouchingWriter struct {
	distribution.BlobWriter
	r *vouchingRepo
}

func (w *vouchingWriter) Commit(ctx context.Context, provisional v1.Descriptor) (v1.Descriptor, error) {
	if provisional.Digest != "" {
		if err := w.r.vouch(ctx, Vouch{Blobs: []digest.Digest{provisional.Digest}}); err != nil {
			return v1.Descriptor{}, err
		}
	}
	return w.BlobWriter.Commit(ctx, provisional)
}

type vouchingManifests struct {
	distribution.ManifestService
	r *vouchingRepo
}

func (s *vouchingManifests) Exists(ctx context.Context, d digest.Digest) (bool, error) {
	err := s.r.vouch(ctx, Vouch{Manifests: []digest.Digest{d}})
	var te *TombstonedError
	if errors.As(err, &te) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return s.ManifestService.Exists(ctx, d)
}

func (s *vouchingManifests) Put(ctx context.Context, m distribution.Manifest, options ...distribution.ManifestServiceOption) (digest.Digest, error) {
	_, payload, err := m.Payload()
	if err != nil {
		return "", err
	}
	children, blobs := References(payload)
	done := s.r.m.Begin()
	defer done()
	v := Vouch{Repository: s.r.name, Manifests: append(children, digest.FromBytes(payload)), Blobs: blobs}
	if err := s.r.m.Vouch(ctx, v); err != nil {
		return "", err
	}
	d, err := s.ManifestService.Put(ctx, m, options...)
	if err == nil {
		s.r.m.Remember(v)
	}
	return d, err
}

type enumeratingManifests struct {
	*vouchingManifests
	en distribution.ManifestEnumerator
}

func (s *enumeratingManifests) Enumerate(ctx context.Context, ingester func(digest.Digest) error) error {
	return s.en.Enumerate(ctx, ingester)
}
