// Package benchimage makes the images the benchmarks push: OCI images of
// random, incompressible layers, with every digest computed up front, so
// that no hashing of the benchmark's own happens while a run is timed.
package benchimage

import (
	"crypto/rand"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// RandomLayer is an uncompressed layer of n incompressible bytes. Its blob
// is not a tar; registries store layers without looking inside.
func RandomLayer(n int) v1.Layer {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on Linux
	return static.NewLayer(b, types.OCIUncompressedLayer)
}

// New builds an OCI image of layers and computes every digest.
func New(layers ...v1.Layer) (v1.Image, error) {
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layers...)
	if err != nil {
		return nil, fmt.Errorf("build image: %w", err)
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	if _, err := img.Digest(); err != nil {
		return nil, fmt.Errorf("digest image: %w", err)
	}
	return img, nil
}
