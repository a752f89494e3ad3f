package scanner

import (
	"context"
	"errors"
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
	rc, err := l.img.blobs.Open(l.img.ctx, digest.Digest(l.digest.String()))
	if err != nil {
		return nil, storageErr(err)
	}
	return &storageReader{rc}, nil
}

func (l *storedLayer) Size() (int64, error) {
	d, err := l.img.blobs.Stat(l.img.ctx, digest.Digest(l.digest.String()))
	if err != nil {
		return 0, storageErr(err)
	}
	return d.Size, nil
}

// storageErr marks err as the storage backend's (to retry the scan),
// unless the blob is missing, which is the image's fault.
func storageErr(err error) error {
	if errors.Is(err, distribution.ErrBlobUnknown) {
		return err
	}
	return &storageError{err}
}

// storageReader marks the errors of reading a blob as the storage's; the
// content's faults show up later, in decompression and tar reading.
type storageReader struct{ io.ReadCloser }

func (r *storageReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = &storageError{err}
	}
	return n, err
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
