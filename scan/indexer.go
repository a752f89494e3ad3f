package scan

import (
	"context"
	"errors"
	"fmt"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/portcullis/portcullis/scan/inventory"
)

// Indexer indexes images for a long-lived server: it shares one IndexOptions (and so one
// LayerCache) between all callers, and with a cache, concurrent IndexLayer calls for the
// same layer share one read of it, and each layer is read once across all images. It is
// safe for concurrent use.
type Indexer struct {
	opts IndexOptions

	mu       sync.Mutex
	inflight map[LayerKey]*flight
}

type flight struct {
	done chan struct{}
	inv  *inventory.Layer
	err  error
}

// NewIndexer returns an Indexer that indexes with opts.
func NewIndexer(opts IndexOptions) *Indexer {
	return &Indexer{opts: opts, inflight: make(map[LayerKey]*flight)}
}

// IndexLayer is the package-level IndexLayer with the Indexer's options, except that with a
// cache a call for a layer another call is already reading waits for that read and shares
// its result.
// When the reading call was cancelled and this one was not, this one reads the layer
// itself. The returned inventory is shared and must not be modified. Errors are those of
// IndexLayer, or ctx's.
func (ix *Indexer) IndexLayer(ctx context.Context, l v1.Layer) (*inventory.Layer, error) {
	if ix.opts.Cache == nil {
		// Nothing is kept to share; and the layer's digest, which keys the calls,
		// may cost a read of the layer (a tarball's).
		return IndexLayer(ctx, l, ix.opts)
	}
	key, err := layerKey(l)
	if err != nil {
		return nil, err
	}
	for {
		ix.mu.Lock()
		if f, ok := ix.inflight[key]; ok {
			ix.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if f.err != nil && ctx.Err() == nil &&
				(errors.Is(f.err, context.Canceled) || errors.Is(f.err, context.DeadlineExceeded)) {
				continue
			}
			return f.inv, f.err
		}
		f := &flight{done: make(chan struct{})}
		ix.inflight[key] = f
		ix.mu.Unlock()

		return ix.lead(ctx, l, key, f)
	}
}

// lead reads the layer for every caller waiting on f. The waiters are let go
// also when reading panics; they get errIndexPanic and the panic goes on.
func (ix *Indexer) lead(ctx context.Context, l v1.Layer, key LayerKey, f *flight) (*inventory.Layer, error) {
	f.err = errIndexPanic
	defer func() {
		ix.mu.Lock()
		delete(ix.inflight, key)
		ix.mu.Unlock()
		close(f.done)
	}()
	f.inv, f.err = IndexLayer(ctx, l, ix.opts)
	return f.inv, f.err
}

// errIndexPanic is what callers sharing a layer's read get when that read panicked.
var errIndexPanic = errors.New("reading the layer panicked")

// Index computes the merged inventory of img, layer by layer through IndexLayer. Errors
// name the layer.
func (ix *Indexer) Index(ctx context.Context, img v1.Image) (*inventory.Image, error) {
	layers, err := imageLayers(img)
	if err != nil {
		return nil, err
	}
	invs := make([]*inventory.Layer, 0, len(layers))
	for i, l := range layers {
		inv, err := ix.IndexLayer(ctx, l)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		invs = append(invs, inv)
	}
	return inventory.Merge(invs), nil
}

// Inventory indexes img and returns its inventory ready to store: the image's config digest,
// its manifest digest (as given) and its layers' DiffIDs with the merged inventory. Errors
// are those of Index, or of reading the image's config.
func (ix *Indexer) Inventory(ctx context.Context, img v1.Image, digest string) (*StoredInventory, error) {
	id, err := img.ConfigName()
	if err != nil {
		return nil, fmt.Errorf("config digest: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	inv, err := ix.Index(ctx, img)
	if err != nil {
		return nil, err
	}
	info := ImageInfo{ID: id.String(), Digest: digest, Layers: []string{}}
	for _, d := range cf.RootFS.DiffIDs {
		info.Layers = append(info.Layers, d.String())
	}
	return NewStoredInventory(info, inv), nil
}
