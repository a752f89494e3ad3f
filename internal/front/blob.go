package front

import (
	"context"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/internal/digests"
)

// BlobFiles opens the files that hold blobs, on storage that keeps each
// blob in a file of its own (the filesystem).
type BlobFiles interface {
	// OpenBlob returns the file holding the bytes of blob d, or an error
	// when it cannot be opened.
	OpenBlob(ctx context.Context, d digest.Digest) (*os.File, error)
}

// blobMaxAge is the Cache-Control max-age distribution sends with a blob
// (365 days): a digest names the same bytes forever.
const blobMaxAge = "max-age=31536000"

// blobMediaType is the Content-Type distribution sends with a blob: its
// blob store keeps no media type.
const blobMediaType = "application/octet-stream"

// serveBlob answers a blob GET or HEAD by sha256 digest from the blob's
// file, with the checks, headers and Range handling of distribution's
// handler, so that the bytes go from the file to the connection by
// sendfile, with no copy through the registry and no 4 MiB read buffer per
// request. It returns false, having written nothing, for every request it
// leaves to distribution: without BlobFiles (S3, which redirects or proxies),
// a caller who may not pull (distribution sends the challenge), another
// digest algorithm, a blob the repository does not link (distribution
// answers 404), a storage error.
func (h *Handler) serveBlob(w http.ResponseWriter, r *http.Request, rt Route) bool {
	if h.blobs == nil || !digests.Canonical(rt.Digest) {
		return false
	}
	if !h.mayPull(r, rt) {
		return false
	}
	ctx := r.Context()
	// The repository's link to the blob, then the blob's size, as
	// distribution's blob store reads them.
	size, ok := h.layout.blobSize(ctx, rt.Name, rt.Digest)
	if !ok {
		return false
	}
	f, err := h.blobs.OpenBlob(ctx, rt.Digest)
	if err != nil {
		return false
	}
	defer f.Close() //nolint:errcheck // read-only: nothing to lose
	hd := w.Header()
	hd.Set(apiVersionHeader, apiVersion)
	hd.Set("Content-Type", blobMediaType)
	hd.Set("Etag", `"`+rt.Digest.String()+`"`)
	hd.Set("Cache-Control", blobMaxAge)
	hd.Set("Docker-Content-Digest", rt.Digest.String())
	hd.Set("Content-Length", strconv.FormatInt(size, 10))
	// ServeContent answers Range, If-None-Match and If-Range as it does
	// for distribution, and copies an *os.File with sendfile.
	http.ServeContent(w, r, rt.Digest.String(), time.Time{}, f)
	return true
}
