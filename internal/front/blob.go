package front

import (
	"context"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/internal/digests"
)

// BlobFiles opens blobs' bytes for http.ServeContent.
type BlobFiles interface {
	// OpenBlob returns the bytes of blob d, size bytes long, or an error
	// when they cannot be opened: on the filesystem the blob's *os.File
	// (ServeContent sends it by sendfile), on S3 a reader that asks for
	// the object from the offset it was sought to at its first Read.
	OpenBlob(ctx context.Context, d digest.Digest, size int64) (io.ReadSeekCloser, error)
}

// blobMaxAge is the Cache-Control max-age distribution sends with a blob
// (365 days): a digest names the same bytes forever.
const blobMaxAge = "max-age=31536000"

// blobMediaType is the Content-Type distribution sends with a blob: its
// blob store keeps no media type.
const blobMediaType = "application/octet-stream"

// serveBlob answers a blob GET or HEAD by sha256 digest from BlobFiles,
// with the checks, headers and Range handling of distribution's handler, so
// that the bytes go from the file to the connection by sendfile, or from
// the object store's answer to the connection in one copy, without
// distribution's 4 MiB read buffer per request. It returns false, having
// written nothing, for every request it leaves to distribution: without
// BlobFiles (S3 that redirects to presigned URLs), a caller who may not pull
// (distribution sends the challenge), another digest algorithm, a link
// that names another digest or a blob whose data is missing, a storage
// error. A blob the repository does not link (what a client asks before
// it pushes the blob) it answers 404 itself, with distribution's error,
// without reading the link again.
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
	size, ok, unlinked := h.layout.blobSize(ctx, rt.Name, rt.Digest)
	if unlinked {
		w.Header().Set(apiVersionHeader, apiVersion)
		h.writeError(w, r, v2.ErrorCodeBlobUnknown.WithDetail(rt.Digest))
		return true
	}
	if !ok {
		return false
	}
	f, err := h.blobs.OpenBlob(ctx, rt.Digest, size)
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
	if _, ok := f.(*os.File); ok {
		http.ServeContent(w, r, rt.Digest.String(), time.Time{}, f)
		return true
	}
	buf := h.copyBufs.Get().(*[blobCopySize]byte)
	defer h.copyBufs.Put(buf)
	http.ServeContent(bufferedCopy{ResponseWriter: w, buf: buf[:]}, r, rt.Digest.String(), time.Time{}, f)
	return true
}

// blobCopySize is the buffer a blob read from the object store goes through
// on its way to the client: each read takes as much of the store's answer as
// has arrived, up to this, and each write hands it to the connection at once
// (net/http's own copy goes 32 KiB at a time). An upload's body goes to
// storage in chunks of the same size (uploadBody).
const blobCopySize = 256 << 10

// bufferedCopy is a ResponseWriter whose ReadFrom, which http.ServeContent
// copies the content with, copies through buf.
type bufferedCopy struct {
	http.ResponseWriter
	buf []byte
}

func (b bufferedCopy) ReadFrom(src io.Reader) (int64, error) {
	return io.CopyBuffer(struct{ io.Writer }{b.ResponseWriter}, src, b.buf)
}
