package scan

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/portcullis/portcullis/scan/inventory"
)

// ErrDiffIDMismatch is returned by IndexLayer when a layer's uncompressed content does not
// hash to the DiffID the image config gives it; its inventory is then not cached.
var ErrDiffIDMismatch = errors.New("layer content does not match its diff id")

// LayerKey identifies a layer's content for the cache: the digest of the stored (compressed)
// blob, which the registry verified when the blob was uploaded, and the DiffID the image
// config claims for it. An inventory is stored under a key only after the blob's content was
// read and found to hash to that DiffID, so a config claiming another layer's DiffID never
// finds that layer's inventory.
type LayerKey struct {
	Digest, DiffID v1.Hash
}

func (k LayerKey) String() string { return k.Digest.String() + "/" + k.DiffID.String() }

// LayerCache stores layer inventories by LayerKey. Implementations must be safe for
// concurrent use.
type LayerCache interface {
	// GetLayer returns the stored inventory, or ok false when there is none.
	GetLayer(ctx context.Context, key LayerKey) (l *inventory.Layer, ok bool, err error)
	// PutLayer stores an inventory.
	PutLayer(ctx context.Context, key LayerKey, l *inventory.Layer) error
}

// IndexOptions tunes Index and IndexLayer. The zero value means no cache and default limits.
type IndexOptions struct {
	// Cache, when set, is consulted before a layer is read and filled after.
	Cache LayerCache
	// Limits bound what is read from each layer.
	Limits inventory.Options
}

// Index computes the inventory of every layer of img (from opts.Cache where present) and
// merges them. Errors name the layer; they are those of IndexLayer.
func Index(ctx context.Context, img v1.Image, opts IndexOptions) (*inventory.Image, error) {
	return NewIndexer(opts).Index(ctx, img)
}

// imageLayers returns img's layers, each answering DiffID from the image
// config. go-containerregistry computes a compressed layer's DiffID by
// decompressing it, which would read every layer twice; IndexLayer checks
// the content against the config's DiffID as it reads it.
func imageLayers(img v1.Image) ([]v1.Layer, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("list layers: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	ids := cf.RootFS.DiffIDs
	if len(ids) != len(layers) {
		return nil, fmt.Errorf("the config lists %d diff ids for %d layers", len(ids), len(layers))
	}
	out := make([]v1.Layer, len(layers))
	for i, l := range layers {
		out[i] = configDiffID{Layer: l, diffID: ids[i]}
	}
	return out, nil
}

type configDiffID struct {
	v1.Layer
	diffID v1.Hash
}

func (l configDiffID) DiffID() (v1.Hash, error) { return l.diffID, nil }

// IndexLayer returns the inventory of one layer: from opts.Cache when it holds one of the
// current inventory.FormatVersion under the layer's LayerKey, else by reading the layer's
// uncompressed stream with inventory.ReadLayer and checking it against the layer's DiffID
// (ErrDiffIDMismatch). It also returns inventory's ErrLimit, ErrUnsafePath and ErrMalformed,
// decompression and cache errors.
func IndexLayer(ctx context.Context, l v1.Layer, opts IndexOptions) (*inventory.Layer, error) {
	diffID, err := l.DiffID()
	if err != nil {
		return nil, fmt.Errorf("diff id: %w", err)
	}
	var key LayerKey
	if opts.Cache != nil {
		if key, err = layerKey(l); err != nil {
			return nil, err
		}
		inv, ok, err := opts.Cache.GetLayer(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("layer cache get %s: %w", key, err)
		}
		if ok && inv.Format == inventory.FormatVersion {
			return inv, nil
		}
	}
	rc, err := l.Uncompressed()
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", diffID, err)
	}
	defer rc.Close()
	var h hash.Hash
	switch diffID.Algorithm {
	case "sha256":
		h = sha256.New()
	case "sha512":
		h = sha512.New()
	default:
		return nil, fmt.Errorf("%w: %s: unsupported digest algorithm", ErrDiffIDMismatch, diffID)
	}
	inv, err := inventory.ReadLayer(ctx, io.TeeReader(rc, h), opts.Limits)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", diffID, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != diffID.Hex {
		return nil, fmt.Errorf("%w: %s has content %s:%s", ErrDiffIDMismatch, diffID, diffID.Algorithm, got)
	}
	if opts.Cache != nil {
		if err := opts.Cache.PutLayer(ctx, key, inv); err != nil {
			return nil, fmt.Errorf("layer cache put %s: %w", key, err)
		}
	}
	return inv, nil
}

// layerKey returns l's LayerKey. Only a layer read from stored blobs gives its digest
// cheaply (go-containerregistry compresses an uncompressed layer to compute it), so callers
// ask for it only where a cache is used: in the registry.
func layerKey(l v1.Layer) (LayerKey, error) {
	d, err := l.Digest()
	if err != nil {
		return LayerKey{}, fmt.Errorf("layer digest: %w", err)
	}
	id, err := l.DiffID()
	if err != nil {
		return LayerKey{}, fmt.Errorf("diff id: %w", err)
	}
	return LayerKey{Digest: d, DiffID: id}, nil
}
