package replication

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/opencontainers/go-digest"
)

// PutManifest stores body, a manifest of mediaType, in repo under ref (a
// tag, or its digest): PUT /v2/<repo>/manifests/<ref>. The bytes are sent
// as they are, so the digest never changes; when ref is a digest it must
// be body's. It returns body's digest. Errors wrap ErrDenied (the remote's
// admission or tag rules refused it, with the remote's reason),
// ErrUnauthorized or ErrUnavailable, or are a *StatusError (400
// MANIFEST_BLOB_UNKNOWN: a blob or child is missing there).
func (r *Remote) PutManifest(ctx context.Context, repo, ref, mediaType string, body []byte) (digest.Digest, error) {
	what := manifestWhat("put manifest", repo, ref)
	if err := checkRepo(repo); err != nil {
		return "", fmt.Errorf("remote %s: %s: %w", r.name, what, err)
	}
	_, d, err := parseRef(ref)
	if err != nil {
		return "", fmt.Errorf("remote %s: %s: %w", r.name, what, err)
	}
	alg := digest.Canonical
	if d != "" {
		alg = d.Algorithm()
	}
	if !alg.Available() {
		return "", fmt.Errorf("remote %s: %s: digest algorithm %s not supported", r.name, what, alg)
	}
	got := alg.FromBytes(body)
	if d != "" && got != d {
		return "", fmt.Errorf("remote %s: %s: content has digest %s: %w", r.name, what, got, ErrDigestMismatch)
	}
	if mediaType == "" {
		var v struct {
			MediaType string `json:"mediaType"`
		}
		_ = json.Unmarshal(body, &v)
		mediaType = v.MediaType
	}
	resp, err := r.send(ctx, call{op: "manifest", what: what, method: http.MethodPut,
		url: r.repoURL(repo, "manifests/"+ref), scope: pushScope(repo),
		content: body, contentType: mediaType, length: int64(len(body))})
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusCreated {
		return "", r.statusError(what, resp)
	}
	drain(resp.Body)
	return got, nil
}

// DeleteTag removes the tag of repo at the remote (DELETE
// /v2/<repo>/manifests/<tag>); the manifest stays. A tag that is not there
// is not an error. Errors wrap ErrDenied, ErrUnauthorized or
// ErrUnavailable, or are a *StatusError (405: the remote does not allow
// deletes).
func (r *Remote) DeleteTag(ctx context.Context, repo, tag string) error {
	what := manifestWhat("delete tag", repo, tag)
	if err := checkRepo(repo); err != nil {
		return fmt.Errorf("remote %s: %s: %w", r.name, what, err)
	}
	if t, _, err := parseRef(tag); err != nil || t == "" {
		return fmt.Errorf("remote %s: %s: not a tag", r.name, what)
	}
	resp, err := r.send(ctx, call{op: "manifest", what: what, method: http.MethodDelete,
		url: r.repoURL(repo, "manifests/"+tag), scope: "repository:" + repo + ":delete"})
	if err != nil {
		return err
	}
	switch {
	case resp.StatusCode/100 == 2:
		drain(resp.Body)
		return nil
	case resp.StatusCode == http.StatusNotFound:
		drain(resp.Body)
		return nil
	}
	return r.statusError(what, resp)
}

// Tags lists the tags of repo: GET /v2/<repo>/tags/list, following Link
// pagination for at most 100 pages. A repository that does not exist has
// no tags and no error. Errors wrap ErrUnauthorized, ErrUnavailable or
// ErrTooLarge, or are a *StatusError.
func (r *Remote) Tags(ctx context.Context, repo string) ([]string, error) {
	what := "list tags of " + clean(repo)
	if err := checkRepo(repo); err != nil {
		return nil, fmt.Errorf("remote %s: %s: %w", r.name, what, err)
	}
	out := []string{}
	err := r.eachPage(ctx, call{op: "tags", what: what, method: http.MethodGet,
		url: r.repoURL(repo, "tags/list?n=1000"), scope: pullScope(repo)}, 100,
		func(resp *http.Response) (bool, error) {
			if resp.StatusCode != http.StatusNotFound {
				return false, nil
			}
			drain(resp.Body)
			return true, nil
		},
		func(body []byte) error {
			var v struct {
				Tags []string `json:"tags"`
			}
			if err := json.Unmarshal(body, &v); err != nil {
				return fmt.Errorf("decode: %w", err)
			}
			out = append(out, v.Tags...)
			return nil
		})
	if err != nil {
		return nil, err
	}
	return out, nil
}
