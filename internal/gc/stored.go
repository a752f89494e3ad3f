package gc

import (
	"context"
	"strings"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
)

// Stored is what the storage holds, counted by one listing.
type Stored struct {
	Repositories int
	Tags         int
	// Manifests counts the manifests of every repository (images, indexes
	// and artifacts: signatures, SBOMs, scan reports), each repository's
	// copy once (a sha512 alias is not counted again).
	Manifests int
	Blobs     int
	// Bytes is the size of every blob, each stored once.
	Bytes int64
}

// CountStored lists the repositories and blobs of d, as a collection's
// mark phase lists them but without reading a tag or a manifest and
// without keeping the listing: it holds only the repository names. It is a
// walk of the whole storage: run it on a schedule, never per request. It
// returns the listing's error.
func CountStored(ctx context.Context, d storagedriver.StorageDriver) (Stored, error) {
	var s Stored
	repos := map[string]bool{}
	err := walk(ctx, d, reposRoot, func(fi storagedriver.FileInfo) {
		segs := strings.Split(strings.TrimPrefix(fi.Path(), reposRoot+"/"), "/")
		for i, seg := range segs {
			if i == 0 || seg != "_manifests" {
				continue
			}
			rest := segs[i+1:]
			switch {
			case len(rest) == 4 && rest[0] == "revisions" && rest[3] == "link" && rest[1] == string(digest.Canonical):
				s.Manifests++
			case len(rest) == 4 && rest[0] == "tags" && rest[2] == "current" && rest[3] == "link":
				s.Tags++
			default:
				return
			}
			repos[strings.Join(segs[:i], "/")] = true
			return
		}
	})
	if err != nil {
		return Stored{}, err
	}
	s.Repositories = len(repos)
	err = walk(ctx, d, blobsRoot, func(fi storagedriver.FileInfo) {
		segs := strings.Split(strings.TrimPrefix(fi.Path(), blobsRoot+"/"), "/")
		if len(segs) == 4 && segs[3] == "data" {
			if _, ok := digestFrom(segs[0], segs[2]); ok {
				s.Blobs++
				s.Bytes += fi.Size()
			}
		}
	})
	if err != nil {
		return Stored{}, err
	}
	return s, nil
}
