package replication

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"
)

// GetBlob fetches the blob d of repo: GET /v2/<repo>/blobs/<d>, following
// redirects (the Authorization header is not sent to another host). It
// returns the body, which the caller must close and whose digest the
// caller verifies while reading, and its length (-1 if unknown). Only the
// wait for the headers is bounded by a timeout; ctx bounds the whole read.
// Errors wrap ErrNotFound, ErrUnauthorized or ErrUnavailable, or are a
// *StatusError.
func (r *Remote) GetBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, int64, error) {
	what := "get blob " + clean(repo) + "@" + clean(string(d))
	if err := checkBlob(repo, d); err != nil {
		return nil, 0, fmt.Errorf("remote %s: %s: %w", r.name, what, err)
	}
	resp, err := r.send(ctx, call{op: "blob", what: what, method: http.MethodGet,
		url: r.repoURL(repo, "blobs/"+string(d)), scope: pullScope(repo)})
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, 0, r.statusError(what, resp)
	}
	return resp.Body, resp.ContentLength, nil
}

// HeadBlob asks the remote about the blob d of repo: HEAD
// /v2/<repo>/blobs/<d>, following redirects. The size comes from
// Content-Length (-1 if unknown). Errors wrap ErrNotFound,
// ErrUnauthorized, ErrUnavailable or, when the Docker-Content-Digest
// header names another digest, ErrDigestMismatch; or are a *StatusError.
func (r *Remote) HeadBlob(ctx context.Context, repo string, d digest.Digest) (Descriptor, error) {
	what := "head blob " + clean(repo) + "@" + clean(string(d))
	if err := checkBlob(repo, d); err != nil {
		return Descriptor{}, fmt.Errorf("remote %s: %s: %w", r.name, what, err)
	}
	resp, err := r.send(ctx, call{op: "blob", what: what, method: http.MethodHead,
		url: r.repoURL(repo, "blobs/"+string(d)), scope: pullScope(repo)})
	if err != nil {
		return Descriptor{}, err
	}
	if resp.StatusCode/100 != 2 {
		return Descriptor{}, r.statusError(what, resp)
	}
	drain(resp.Body)
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" && h != string(d) {
		return Descriptor{}, fmt.Errorf("remote %s: %s: Docker-Content-Digest says %s: %w", r.name, what, clean(h), ErrDigestMismatch)
	}
	return Descriptor{MediaType: contentType(resp.Header), Digest: d, Size: resp.ContentLength}, nil
}

func checkBlob(repo string, d digest.Digest) error {
	if err := checkRepo(repo); err != nil {
		return err
	}
	if err := d.Validate(); err != nil {
		return fmt.Errorf("invalid digest %q: %w", clean(string(d)), err)
	}
	return nil
}
