package replication

import (
	"context"
	_ "crypto/sha256" // digest.SHA256
	_ "crypto/sha512" // digest.SHA384, digest.SHA512
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// MaxManifestSize bounds the manifests and referrers pages read from a
// remote.
const MaxManifestSize = 4 << 20

// Manifest media types a remote may return. Docker schema 1 is not asked
// for.
const (
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// manifestAccept is the Accept header of manifest requests.
var manifestAccept = strings.Join([]string{
	v1.MediaTypeImageManifest, v1.MediaTypeImageIndex, mediaTypeDockerManifest, mediaTypeDockerManifestList,
}, ", ")

// Descriptor is what the remote said about a manifest or blob.
type Descriptor struct {
	// MediaType is the Content-Type of the answer (for a manifest whose
	// answer had none or a generic one, the manifest's mediaType field).
	MediaType string
	// Digest is the content's digest.
	Digest digest.Digest
	// Size is the content's length in bytes, -1 when a HEAD answer did not
	// say.
	Size int64
}

// HeadManifest asks the remote about the manifest ref (a tag or a digest)
// of repo: HEAD /v2/<repo>/manifests/<ref>, accepting OCI manifests and
// indexes and Docker schema 2 manifests and lists. The digest comes from
// the Docker-Content-Digest header (required for a tag; for a digest, the
// digest itself), the size from Content-Length. Errors wrap ErrNotFound,
// ErrUnauthorized or ErrUnavailable, or are a *StatusError.
func (r *Remote) HeadManifest(ctx context.Context, repo, ref string) (Descriptor, error) {
	what := manifestWhat("head manifest", repo, ref)
	if err := checkRepo(repo); err != nil {
		return Descriptor{}, fmt.Errorf("remote %s: %s: %w", r.name, what, err)
	}
	_, d, err := parseRef(ref)
	if err != nil {
		return Descriptor{}, fmt.Errorf("remote %s: %s: %w", r.name, what, err)
	}
	resp, err := r.send(ctx, call{op: "manifest", what: what, method: http.MethodHead,
		url: r.repoURL(repo, "manifests/"+ref), accept: manifestAccept, scope: pullScope(repo)})
	if err != nil {
		return Descriptor{}, err
	}
	if resp.StatusCode/100 != 2 {
		return Descriptor{}, r.statusError(what, resp)
	}
	drain(resp.Body)
	desc := Descriptor{MediaType: contentType(resp.Header), Digest: d, Size: resp.ContentLength}
	if d == "" {
		h := resp.Header.Get("Docker-Content-Digest")
		hd, err := digest.Parse(h)
		if err != nil {
			return Descriptor{}, fmt.Errorf("remote %s: %s: Docker-Content-Digest %q missing or invalid", r.name, what, clean(h))
		}
		desc.Digest = hd
	}
	return desc, nil
}

// GetManifest fetches the manifest ref (a tag or a digest) of repo, with
// the Accept header of HeadManifest. The body is read whole, up to
// MaxManifestSize (larger: an error wrapping ErrTooLarge), and its digest
// is computed over the exact bytes (sha256, or the ref's algorithm when
// ref is a digest). It must equal ref when ref is a digest, and the
// Docker-Content-Digest header when there is one; otherwise the error
// wraps ErrDigestMismatch. The media type is the Content-Type, or the
// body's mediaType field when the Content-Type is missing or generic.
// Other errors wrap ErrNotFound, ErrUnauthorized or ErrUnavailable, or
// are a *StatusError.
func (r *Remote) GetManifest(ctx context.Context, repo, ref string) (Descriptor, []byte, error) {
	what := manifestWhat("get manifest", repo, ref)
	if err := checkRepo(repo); err != nil {
		return Descriptor{}, nil, fmt.Errorf("remote %s: %s: %w", r.name, what, err)
	}
	_, d, err := parseRef(ref)
	if err != nil {
		return Descriptor{}, nil, fmt.Errorf("remote %s: %s: %w", r.name, what, err)
	}
	resp, err := r.send(ctx, call{op: "manifest", what: what, method: http.MethodGet,
		url: r.repoURL(repo, "manifests/"+ref), accept: manifestAccept, scope: pullScope(repo)})
	if err != nil {
		return Descriptor{}, nil, err
	}
	if resp.StatusCode/100 != 2 {
		return Descriptor{}, nil, r.statusError(what, resp)
	}
	body, err := r.readManifest(ctx, what, resp)
	if err != nil {
		return Descriptor{}, nil, err
	}

	alg := digest.Canonical
	if d != "" {
		alg = d.Algorithm()
	}
	if !alg.Available() {
		return Descriptor{}, nil, fmt.Errorf("remote %s: %s: digest algorithm %s not supported", r.name, what, alg)
	}
	got := alg.FromBytes(body)
	if d != "" && got != d {
		return Descriptor{}, nil, fmt.Errorf("remote %s: %s: content has digest %s: %w", r.name, what, got, ErrDigestMismatch)
	}
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
		hd, err := digest.Parse(h)
		if err != nil || !hd.Algorithm().Available() {
			return Descriptor{}, nil, fmt.Errorf("remote %s: %s: Docker-Content-Digest %q invalid: %w", r.name, what, clean(h), ErrDigestMismatch)
		}
		if hd.Algorithm().FromBytes(body) != hd {
			return Descriptor{}, nil, fmt.Errorf("remote %s: %s: content has digest %s, Docker-Content-Digest says %s: %w",
				r.name, what, hd.Algorithm().FromBytes(body), hd, ErrDigestMismatch)
		}
	}
	mt := contentType(resp.Header)
	if isGenericType(mt) {
		var v struct {
			MediaType string `json:"mediaType"`
		}
		if json.Unmarshal(body, &v) == nil && v.MediaType != "" {
			mt = v.MediaType
		}
	}
	return Descriptor{MediaType: mt, Digest: got, Size: int64(len(body))}, body, nil
}

// readManifest reads a manifest or referrers answer whole, bounded by
// MaxManifestSize, and closes it.
func (r *Remote) readManifest(ctx context.Context, what string, resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	if resp.ContentLength > MaxManifestSize {
		return nil, fmt.Errorf("remote %s: %s: %d bytes, more than %d: %w", r.name, what, resp.ContentLength, MaxManifestSize, ErrTooLarge)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxManifestSize+1))
	if err != nil {
		return nil, r.transportError(ctx, what+": read body", err)
	}
	if len(body) > MaxManifestSize {
		return nil, fmt.Errorf("remote %s: %s: more than %d bytes: %w", r.name, what, MaxManifestSize, ErrTooLarge)
	}
	return body, nil
}

// manifestWhat names a manifest request for errors.
func manifestWhat(verb, repo, ref string) string {
	sep := ":"
	if strings.Contains(ref, ":") {
		sep = "@"
	}
	return verb + " " + clean(repo) + sep + clean(ref)
}

// contentType is the media type of an answer, without parameters.
func contentType(h http.Header) string {
	ct := h.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err == nil {
		return mt
	}
	return strings.TrimSpace(ct)
}

// isGenericType reports whether a Content-Type says nothing about the
// kind of manifest.
func isGenericType(mt string) bool {
	switch mt {
	case "", "application/json", "text/plain", "application/octet-stream":
		return true
	}
	return false
}
