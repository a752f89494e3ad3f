package front

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"sync"
)

// uploadBody is a request body of a blob upload (PATCH, PUT, or POST with
// a digest) that the registry core's copy reads through WriteTo. The core
// copies a body 32 KiB at a time (a read of the connection, a write to the
// upload's file and a hash update for each: 2,048 of each for a 64 MiB
// layer); io.Copy prefers the body's WriteTo to the upload writer's
// ReadFrom, so each write to storage and to the upload's hash carries
// blobCopySize bytes (256 KiB), read from the connection in as few reads
// as they arrive in. Larger chunks cost more CPU: they no longer stay in
// the core's cache between the read, the write and the hash.
type uploadBody struct {
	io.ReadCloser
	bufs *sync.Pool // of *[blobCopySize]byte
}

// withUploadBody returns r with its body read through an uploadBody; r
// itself when it has no body.
func withUploadBody(r *http.Request, bufs *sync.Pool) *http.Request {
	if r.Body == nil || r.Body == http.NoBody {
		return r
	}
	r2 := new(http.Request)
	*r2 = *r
	r2.Body = &uploadBody{ReadCloser: r.Body, bufs: bufs}
	return r2
}

// WriteTo writes the body to w, each chunk filled as far as the body
// allows before it is written, and returns the bytes w took. A read error
// other than io.EOF is returned after the bytes read before it are
// written, as io.Copy does.
func (b *uploadBody) WriteTo(w io.Writer) (int64, error) {
	buf := b.bufs.Get().(*[blobCopySize]byte)
	defer b.bufs.Put(buf)
	var written int64
	for {
		n, rerr := b.fill(buf[:])
		if n > 0 {
			m, werr := w.Write(buf[:n])
			written += int64(m)
			switch {
			case werr != nil:
				return written, werr
			case m != n:
				return written, io.ErrShortWrite
			}
		}
		switch {
		case rerr == io.EOF: // as io.Copy: the end, not an error
			return written, nil
		case rerr != nil:
			return written, rerr
		}
	}
}

// fill reads into p until p is full or a read fails, and returns the bytes
// read with the read's error (io.EOF at the end of the body).
func (b *uploadBody) fill(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := b.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// UploadOffsets is told what a request's client says of the upload it
// resumes, for storage that can use it.
type UploadOffsets interface {
	// UploadOffset tells the storage of the request of ctx that its
	// client says the upload with ID upload holds offset bytes.
	UploadOffset(ctx context.Context, upload string, offset int64)
}

// noteUploadOffset passes on the offset of a PATCH's or PUT's upload state
// (the _state parameter distribution gives the client in each Location)
// to the storage, when it can use it. The state is read from the query, not
// verified: distribution verifies the state it is given (the query's, or a
// form body's) before it resumes the upload and refuses one it did not
// sign; a hint that differs from it can only make the storage resume the
// upload empty, which distribution refuses unless its own state says 0.
func (h *Handler) noteUploadOffset(r *http.Request, rt Route) {
	if h.offsets == nil || rt.Upload == "" || (r.Method != http.MethodPatch && r.Method != http.MethodPut) {
		return
	}
	id, offset, ok := uploadState(r.URL.Query().Get("_state"))
	if !ok || id != rt.Upload {
		return
	}
	h.offsets.UploadOffset(r.Context(), id, offset)
}

// uploadState reads the upload ID and offset of distribution's upload
// state: base64url of an HMAC-SHA256 and the state's JSON.
func uploadState(token string) (id string, offset int64, ok bool) {
	b, err := base64.URLEncoding.DecodeString(token)
	if err != nil || len(b) <= sha256.Size {
		return "", 0, false
	}
	var state struct {
		UUID   string
		Offset int64
	}
	if err := json.Unmarshal(b[sha256.Size:], &state); err != nil || state.UUID == "" || state.Offset < 0 {
		return "", 0, false
	}
	return state.UUID, state.Offset, true
}
