package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/opencontainers/go-digest"
)

// ChunkSize is the largest blob UploadBlob sends in one PUT; larger blobs
// go in PATCH requests of ChunkSize bytes each.
const ChunkSize = 32 << 20

// pushScope is the token scope for writing repo.
func pushScope(repo string) string { return "repository:" + repo + ":pull,push" }

// MountBlob asks the remote to link the blob d of repository from into
// repo (POST /v2/<repo>/blobs/uploads/?mount=<d>&from=<from>) and reports
// whether it did. When the remote does not mount (it has no such blob in
// from, or does not support mounting) it opens an upload session instead,
// which MountBlob cancels; mounted is then false and err nil. Errors wrap
// ErrUnauthorized, ErrDenied or ErrUnavailable, or are a *StatusError.
func (r *Remote) MountBlob(ctx context.Context, repo, from string, d digest.Digest) (mounted bool, err error) {
	what := "mount blob " + clean(repo) + "@" + clean(string(d)) + " from " + clean(from)
	if err := checkBlob(repo, d); err != nil {
		return false, fmt.Errorf("remote %s: %s: %w", r.name, what, err)
	}
	if err := checkRepo(from); err != nil {
		return false, fmt.Errorf("remote %s: %s: %w", r.name, what, err)
	}
	q := url.Values{"mount": {string(d)}, "from": {from}}
	resp, err := r.send(ctx, call{op: "blob", what: what, method: http.MethodPost,
		url: r.repoURL(repo, "blobs/uploads/") + "?" + q.Encode(), scope: pushScope(repo) + " " + pullScope(from),
		content: []byte{}})
	if err != nil {
		return false, err
	}
	switch resp.StatusCode {
	case http.StatusCreated:
		drain(resp.Body)
		return true, nil
	case http.StatusAccepted:
		drain(resp.Body)
		if loc, err := r.location(resp); err == nil {
			r.cancelUpload(ctx, repo, loc)
		}
		return false, nil
	}
	return false, r.statusError(what, resp)
}

// cancelUpload deletes an upload session that will not be used; the
// remote purges abandoned sessions anyway, so failures are ignored.
func (r *Remote) cancelUpload(ctx context.Context, repo, loc string) {
	resp, err := r.send(ctx, call{op: "blob", what: "cancel upload to " + clean(repo), method: http.MethodDelete,
		url: loc, scope: pushScope(repo)})
	if err == nil {
		drain(resp.Body)
	}
}

// UploadBlob uploads the blob d of size bytes, read from body, to repo:
// POST /v2/<repo>/blobs/uploads/, then one PUT with the content when size
// is at most ChunkSize, else PATCH requests of ChunkSize bytes and a
// closing PUT. body is streamed, never held whole in memory; the remote
// checks the digest. Errors wrap ErrUnauthorized, ErrDenied or
// ErrUnavailable (also when body fails or ends early), or are a
// *StatusError (400 DIGEST_INVALID: the content does not match d).
func (r *Remote) UploadBlob(ctx context.Context, repo string, d digest.Digest, size int64, body io.Reader) error {
	what := "upload blob " + clean(repo) + "@" + clean(string(d))
	if err := checkBlob(repo, d); err != nil {
		return fmt.Errorf("remote %s: %s: %w", r.name, what, err)
	}
	if size < 0 {
		return fmt.Errorf("remote %s: %s: size unknown", r.name, what)
	}
	resp, err := r.send(ctx, call{op: "blob", what: what, method: http.MethodPost,
		url: r.repoURL(repo, "blobs/uploads/"), scope: pushScope(repo), content: []byte{}})
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusAccepted {
		return r.statusError(what, resp)
	}
	drain(resp.Body)
	loc, err := r.location(resp)
	if err != nil {
		return fmt.Errorf("remote %s: %s: %w", r.name, what, err)
	}
	src := &sourceReader{r: body}
	if size > r.chunkSize {
		for off := int64(0); off < size; {
			n := min(r.chunkSize, size-off)
			resp, err := r.send(ctx, call{op: "blob", what: what, method: http.MethodPatch, url: loc, scope: pushScope(repo),
				stream: &oneShot{r: io.LimitReader(src, n)}, contentType: "application/octet-stream", length: n,
				contentRange: fmt.Sprintf("%d-%d", off, off+n-1)})
			if err != nil {
				return r.bodyError(ctx, what, src, err)
			}
			if resp.StatusCode != http.StatusAccepted {
				return r.statusError(what, resp)
			}
			drain(resp.Body)
			if loc, err = r.location(resp); err != nil {
				return fmt.Errorf("remote %s: %s: %w", r.name, what, err)
			}
			off += n
		}
		size = 0
	}
	put := call{op: "blob", what: what, method: http.MethodPut, url: withQuery(loc, "digest", string(d)), scope: pushScope(repo),
		contentType: "application/octet-stream", length: size}
	if size > 0 {
		put.stream = &oneShot{r: io.LimitReader(src, size)}
	} else {
		put.content = []byte{}
	}
	resp, err = r.send(ctx, put)
	if err != nil {
		return r.bodyError(ctx, what, src, err)
	}
	if resp.StatusCode != http.StatusCreated {
		return r.statusError(what, resp)
	}
	drain(resp.Body)
	return nil
}

// bodyError says that reading the source failed, when it did, rather than
// the transport error it caused.
func (r *Remote) bodyError(ctx context.Context, what string, src *sourceReader, err error) error {
	if src.err != nil && !errors.Is(src.err, io.EOF) && ctx.Err() == nil {
		return fmt.Errorf("remote %s: %s: read source: %w: %w", r.name, what, ErrUnavailable, src.err)
	}
	return err
}

// sourceReader remembers the error of its reader.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil {
		s.err = err
	}
	return n, err
}

// location resolves the Location header of an upload answer, which must
// stay on the remote's origin (the Authorization header goes with it).
func (r *Remote) location(resp *http.Response) (string, error) {
	h := resp.Header.Get("Location")
	if h == "" {
		return "", errors.New("upload answer without a Location header")
	}
	u, err := url.Parse(h)
	if err != nil {
		return "", fmt.Errorf("invalid Location header %q", clean(h))
	}
	abs := resp.Request.URL.ResolveReference(u).String()
	if !r.sameOrigin(abs) {
		return "", fmt.Errorf("upload location on another host: %s", clean(abs))
	}
	return abs, nil
}

// withQuery adds key=value to the query of the URL s.
func withQuery(s, key, value string) string {
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}
