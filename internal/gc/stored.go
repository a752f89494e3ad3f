package gc

import (
	"context"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
)

// Stored is what the storage holds, counted by one listing.
type Stored struct {
	Repositories int
	Tags         int
	// Manifests counts the manifests of every repository (images, indexes
	// and artifacts: signatures, SBOMs, scan reports), each repository's
	// copy once.
	Manifests int
	Blobs     int
	// Bytes is the size of every blob, each stored once.
	Bytes int64
}

// CountStored lists the repositories and blobs of d (as a collection's
// mark phase lists them, without reading a tag or a manifest) and counts
// what is stored. It is a walk of the whole storage: run it on a schedule,
// never per request. It returns the listing's error.
func CountStored(ctx context.Context, d storagedriver.StorageDriver) (Stored, error) {
	inv := newInventory()
	if _, err := listRepos(ctx, d, inv); err != nil {
		return Stored{}, err
	}
	if err := listBlobs(ctx, d, inv); err != nil {
		return Stored{}, err
	}
	var s Stored
	for _, r := range inv.repos {
		if len(r.revisions) == 0 && len(r.tags) == 0 {
			continue // only uploads or pull times
		}
		s.Repositories++
		s.Tags += len(r.tags)
		for d := range r.revisions {
			if d.Algorithm() == digest.Canonical {
				s.Manifests++
			}
		}
	}
	for _, b := range inv.blobs {
		s.Blobs++
		s.Bytes += b.size
	}
	return s, nil
}
