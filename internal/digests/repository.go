package digests

import (
	"context"
	"errors"
	"net/http"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Repository wraps a distribution repository so that content addressed by a
// non-canonical digest keeps that digest.
type Repository struct {
	distribution.Repository
	links *Links
}

// Wrap returns repo with non-canonical digest support.
func Wrap(repo distribution.Repository, links *Links) *Repository {
	return &Repository{Repository: repo, links: links}
}

// Blobs returns the wrapped blob store.
func (r *Repository) Blobs(ctx context.Context) distribution.BlobStore {
	return &blobStore{BlobStore: r.Repository.Blobs(ctx), repo: r.Named().Name(), links: r.links}
}

// Manifests returns the wrapped manifest service.
func (r *Repository) Manifests(ctx context.Context, options ...distribution.ManifestServiceOption) (distribution.ManifestService, error) {
	ms, err := r.Repository.Manifests(ctx, options...)
	if err != nil {
		return nil, err
	}
	return &manifestService{ManifestService: ms, repo: r.Named().Name(), links: r.links}, nil
}

type manifestService struct {
	distribution.ManifestService
	repo  string
	links *Links
}

// Put stores the manifest under its canonical digest and, when the client
// addressed it by another algorithm (see WithRequested), links that digest
// too and returns it.
func (m *manifestService) Put(ctx context.Context, manifest distribution.Manifest, options ...distribution.ManifestServiceOption) (digest.Digest, error) {
	dgst, err := m.ManifestService.Put(ctx, manifest, options...)
	if err != nil {
		return dgst, err
	}
	req := Requested(ctx)
	if req == "" || Canonical(req) {
		return dgst, nil
	}
	if _, payload, err := manifest.Payload(); err != nil || req.Algorithm().FromBytes(payload) != req {
		return dgst, nil // not the manifest the request named
	}
	if err := m.links.LinkRevision(ctx, m.repo, req, dgst); err != nil {
		return dgst, err
	}
	return req, nil
}

type blobStore struct {
	distribution.BlobStore
	repo  string
	links *Links
}

// Stat describes the blob with the digest it was asked for.
func (b *blobStore) Stat(ctx context.Context, dgst digest.Digest) (v1.Descriptor, error) {
	desc, err := b.BlobStore.Stat(ctx, dgst)
	if err == nil {
		desc.Digest = dgst
	}
	return desc, err
}

// ServeBlob serves the blob with the digest it was asked for in its headers.
func (b *blobStore) ServeBlob(ctx context.Context, w http.ResponseWriter, r *http.Request, dgst digest.Digest) error {
	if Canonical(dgst) {
		return b.BlobStore.ServeBlob(ctx, w, r, dgst)
	}
	return b.BlobStore.ServeBlob(ctx, &digestHeaderWriter{ResponseWriter: w, dgst: dgst}, r, dgst)
}

// Create starts an upload, or mounts a blob from another repository. A
// mount by a non-canonical digest is done by the canonical digest, then
// aliased, because distribution would link the alias to a blob it never
// stored.
func (b *blobStore) Create(ctx context.Context, options ...distribution.BlobCreateOption) (distribution.BlobWriter, error) {
	var co distribution.CreateOptions
	for _, o := range options {
		_ = o.Apply(&co) // options of other types are applied by the store below
	}
	from := co.Mount.From
	if co.Mount.ShouldMount && from != nil && !Canonical(from.Digest()) && co.Mount.Stat == nil {
		return b.mountAlias(ctx, from, options)
	}
	w, err := b.BlobStore.Create(ctx, options...)
	if err != nil {
		return nil, err
	}
	return &blobWriter{BlobWriter: w}, nil
}

func (b *blobStore) mountAlias(ctx context.Context, from reference.Canonical, options []distribution.BlobCreateOption) (distribution.BlobWriter, error) {
	alias := from.Digest()
	target, err := b.links.LayerTarget(ctx, from.Name(), alias)
	if err != nil {
		// Not mountable: start a normal upload instead.
		w, err := b.BlobStore.Create(ctx, withoutMount(options)...)
		if err != nil {
			return nil, err
		}
		return &blobWriter{BlobWriter: w}, nil
	}
	src, err := reference.WithDigest(reference.TrimNamed(from), target)
	if err != nil {
		return nil, err
	}
	w, err := b.BlobStore.Create(ctx, append(withoutMount(options), storage.WithMountFrom(src))...)
	var mounted distribution.ErrBlobMounted
	if !errors.As(err, &mounted) {
		if err != nil {
			return nil, err
		}
		return &blobWriter{BlobWriter: w}, nil
	}
	if err := b.links.LinkLayer(ctx, b.repo, alias, target); err != nil {
		return nil, err
	}
	mounted.From = from
	mounted.Descriptor.Digest = alias
	return nil, mounted
}

// Resume continues an upload.
func (b *blobStore) Resume(ctx context.Context, id string) (distribution.BlobWriter, error) {
	w, err := b.BlobStore.Resume(ctx, id)
	if err != nil {
		return nil, err
	}
	return &blobWriter{BlobWriter: w}, nil
}

// withoutMount drops mount options, which are the only options that apply to
// *distribution.CreateOptions and set Mount.
func withoutMount(options []distribution.BlobCreateOption) []distribution.BlobCreateOption {
	out := make([]distribution.BlobCreateOption, 0, len(options))
	for _, o := range options {
		var co distribution.CreateOptions
		if o.Apply(&co) == nil && co.Mount.ShouldMount {
			continue
		}
		out = append(out, o)
	}
	return out
}

type blobWriter struct {
	distribution.BlobWriter
}

// Commit finishes the upload; the descriptor keeps the client's digest.
func (w *blobWriter) Commit(ctx context.Context, provisional v1.Descriptor) (v1.Descriptor, error) {
	desc, err := w.BlobWriter.Commit(ctx, provisional)
	if err == nil && provisional.Digest != "" && !Canonical(provisional.Digest) {
		desc.Digest = provisional.Digest
	}
	return desc, err
}

// digestHeaderWriter puts the requested digest in the digest headers.
type digestHeaderWriter struct {
	http.ResponseWriter
	dgst        digest.Digest
	wroteHeader bool
}

func (w *digestHeaderWriter) fix() {
	if w.wroteHeader {
		return
	}
	w.wroteHeader = true
	h := w.Header()
	if h.Get("Docker-Content-Digest") != "" {
		h.Set("Docker-Content-Digest", w.dgst.String())
	}
	if h.Get("Etag") != "" {
		h.Set("Etag", `"`+w.dgst.String()+`"`)
	}
}

func (w *digestHeaderWriter) WriteHeader(code int) {
	w.fix()
	w.ResponseWriter.WriteHeader(code)
}

func (w *digestHeaderWriter) Write(p []byte) (int, error) {
	w.fix()
	return w.ResponseWriter.Write(p)
}

func (w *digestHeaderWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

var _ distribution.ManifestEnumerator = (*manifestService)(nil)

// Enumerate calls ingester with the canonical digest of each manifest of the
// repository, when the wrapped manifest service can list them
// (distribution.ManifestEnumerator). A manifest with a sha512 alias may be
// reported twice.
func (m *manifestService) Enumerate(ctx context.Context, ingester func(digest.Digest) error) error {
	en, ok := m.ManifestService.(distribution.ManifestEnumerator)
	if !ok {
		return errors.New("manifest service cannot enumerate")
	}
	return en.Enumerate(ctx, ingester)
}
