package scanner

import (
	"bytes"
	"context"
	"io"

	"github.com/distribution/distribution/v3"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// storedImage is an image in the registry's storage seen as a
// go-containerregistry image. It keeps the scan job's context: the image
// lives only as long as that job.
type storedImage struct {
	ctx       context.Context
	blobs     distribution.BlobStore
	mediaType string
	manifest  []byte
	config    []byte
}

func (s *storedImage) RawManifest() ([]byte, error) { return s.manifest, nil }

func (s *storedImage) MediaType() (types.MediaType, error) { return types.MediaType(s.mediaType), nil }

func (s *storedImage) RawConfigFile() ([]byte, error) { return s.config, nil }

func (s *storedImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	return &storedLayer{img: s, digest: h}, nil
}

type storedLayer struct {
	img    *storedImage
	digest v1.Hash
}

func (l *storedLayer) Digest() (v1.Hash, error) { return l.digest, nil }

func (l *storedLayer) Compressed() (io.ReadCloser, error) {
	return l.img.blobs.Open(l.img.ctx, digest.Digest(l.digest.String()))
}

func (l *storedLayer) Size() (int64, error) {
	d, err := l.img.blobs.Stat(l.img.ctx, digest.Digest(l.digest.String()))
	return d.Size, err
}

func (l *storedLayer) MediaType() (types.MediaType, error) {
	m, err := partial.Manifest(l.img)
	if err != nil {
		return "", err
	}
	for _, d := range m.Layers {
		if d.Digest == l.digest {
			return d.MediaType, nil
		}
	}
	return types.DockerLayer, nil
}

// openImage reads manifest d of repo as an image, or returns ok false when
// it is not a container image (an index, or an artifact).
func openImage(ctx context.Context, repo distribution.Repository, d digest.Digest) (v1.Image, bool, error) {
	ms, err := repo.Manifests(ctx)
	if err != nil {
		return nil, false, err
	}
	m, err := ms.Get(ctx, d)
	if err != nil {
		return nil, false, err
	}
	mt, payload, err := m.Payload()
	if err != nil {
		return nil, false, err
	}
	if mt != string(types.OCIManifestSchema1) && mt != string(types.DockerManifestSchema2) {
		return nil, false, nil
	}
	parsed, err := v1.ParseManifest(bytes.NewReader(payload))
	if err != nil {
		return nil, false, err
	}
	if cmt := parsed.Config.MediaType; cmt != types.OCIConfigJSON && cmt != types.DockerConfigJSON {
		return nil, false, nil // an artifact: nothing to scan
	}
	blobs := repo.Blobs(ctx)
	cfg, err := blobs.Get(ctx, digest.Digest(parsed.Config.Digest.String()))
	if err != nil {
		return nil, false, err
	}
	img, err := partial.CompressedToImage(&storedImage{ctx: ctx, blobs: blobs, mediaType: mt, manifest: payload, config: cfg})
	if err != nil {
		return nil, false, err
	}
	return img, true, nil
}
