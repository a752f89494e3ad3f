package replication

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxReferrersPages bounds the pages of a referrers list that are read.
const maxReferrersPages = 10

// Referrers lists the manifests whose subject is d in repo. It uses the
// OCI 1.1 referrers API (GET /v2/<repo>/referrers/<d>, following Link
// pagination for at most 10 pages); when the remote has no such API (it
// answers 400, 405, or 404 without saying the repository is unknown) it
// falls back to the referrers tag schema: the image index tagged
// <alg>-<hex>, whose manifests it returns. No referrers is an empty list
// and no error. Errors wrap ErrNotFound (the repository does not exist),
// ErrUnauthorized, ErrUnavailable, ErrTooLarge or ErrDigestMismatch, or
// are a *StatusError.
func (r *Remote) Referrers(ctx context.Context, repo string, d digest.Digest) ([]v1.Descriptor, error) {
	what := "list referrers of " + clean(repo) + "@" + clean(string(d))
	if err := checkBlob(repo, d); err != nil {
		return nil, fmt.Errorf("remote %s: %s: %w", r.name, what, err)
	}
	out := []v1.Descriptor{}
	var fallback []v1.Descriptor
	usedTag := false
	err := r.eachPage(ctx, call{op: "referrers", what: what, method: http.MethodGet,
		url: r.repoURL(repo, "referrers/"+string(d)), accept: v1.MediaTypeImageIndex, scope: pullScope(repo)},
		maxReferrersPages,
		func(resp *http.Response) (bool, error) {
			if !r.noReferrersAPI(resp) {
				return false, nil
			}
			usedTag = true
			var err error
			fallback, err = r.referrersTag(ctx, repo, d)
			return true, err
		},
		func(body []byte) error {
			var idx v1.Index
			if err := json.Unmarshal(body, &idx); err != nil {
				return fmt.Errorf("decode index: %w", err)
			}
			out = append(out, idx.Manifests...)
			return nil
		})
	if err != nil {
		return nil, err
	}
	if usedTag {
		return fallback, nil
	}
	return out, nil
}

// eachPage sends c, a GET, and the pages that Link rel="next" headers
// name (on the remote's origin only), at most maxPages, and hands each
// page's body to page. first, when set, sees the first answer and may
// handle it instead (it returns true; it then consumes the body).
func (r *Remote) eachPage(ctx context.Context, c call, maxPages int, first func(*http.Response) (bool, error), page func([]byte) error) error {
	for n := 0; c.url != ""; n++ {
		if n == maxPages {
			r.log.WarnContext(ctx, "list truncated", "what", c.what, "pages", n)
			return nil
		}
		resp, err := r.send(ctx, c)
		if err != nil {
			return err
		}
		if n == 0 && first != nil {
			if handled, err := first(resp); handled {
				return err
			}
		}
		if resp.StatusCode/100 != 2 {
			return r.statusError(c.what, resp)
		}
		link, err := nextLink(resp)
		if err != nil {
			drain(resp.Body)
			return fmt.Errorf("remote %s: %s: %w", r.name, c.what, err)
		}
		body, err := r.readManifest(ctx, c.what, resp)
		if err != nil {
			return err
		}
		if err := page(body); err != nil {
			return fmt.Errorf("remote %s: %s: %w", r.name, c.what, err)
		}
		if link != "" && !r.sameOrigin(link) {
			return fmt.Errorf("remote %s: %s: next page on another host: %s", r.name, c.what, clean(link))
		}
		c.url = link
	}
	return nil
}

// noReferrersAPI reports whether resp says the remote has no referrers
// API. It then consumes resp.Body; otherwise resp can still be reported.
func (r *Remote) noReferrersAPI(resp *http.Response) bool {
	switch resp.StatusCode {
	case http.StatusBadRequest, http.StatusMethodNotAllowed:
		drain(resp.Body)
		return true
	case http.StatusNotFound:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		_ = resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(b))
		// A remote with the API answers 404 only for an unknown repository;
		// one without it answers 404 for the route, with or without an OCI
		// error body.
		code, _, _ := ociError(bytes.NewReader(b))
		return code != "NAME_UNKNOWN"
	}
	return false
}

// referrersTag reads the referrers tag schema's index for d.
func (r *Remote) referrersTag(ctx context.Context, repo string, d digest.Digest) ([]v1.Descriptor, error) {
	tag := d.Algorithm().String() + "-" + d.Encoded()
	_, body, err := r.GetManifest(ctx, repo, tag)
	if errors.Is(err, ErrNotFound) {
		return []v1.Descriptor{}, nil
	}
	if err != nil {
		return nil, err
	}
	var idx v1.Index
	if err := json.Unmarshal(body, &idx); err != nil {
		return nil, fmt.Errorf("remote %s: list referrers of %s@%s: decode tag %s: %w", r.name, clean(repo), d, tag, err)
	}
	if idx.Manifests == nil {
		return []v1.Descriptor{}, nil
	}
	return idx.Manifests, nil
}

// nextLink returns the absolute URL of the Link rel="next" header, or "".
func nextLink(resp *http.Response) (string, error) {
	for _, c := range parseLinks(resp.Header.Values("Link")) {
		if c.rel == "next" {
			u, err := url.Parse(c.target)
			if err != nil {
				return "", fmt.Errorf("invalid Link header: %w", err)
			}
			return resp.Request.URL.ResolveReference(u).String(), nil
		}
	}
	return "", nil
}

// sameOrigin reports whether u is on the remote's scheme and host.
func (r *Remote) sameOrigin(u string) bool {
	pu, err := url.Parse(u)
	return err == nil && pu.Scheme+"://"+pu.Host == r.base
}
