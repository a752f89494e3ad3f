package front

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/manifest/manifestlist"
	"github.com/distribution/distribution/v3/manifest/ocischema"
	"github.com/distribution/distribution/v3/manifest/schema2"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/internal/api"
	"github.com/portcullis/portcullis/internal/digests"
)

// serveManifest answers a manifest GET or HEAD, by tag or by sha256 digest,
// from storage, with the headers and body distribution's handler would
// give, without the work distribution does around every request (routing,
// request loggers, event bridge, repository construction, authorization
// again). It returns false, having written nothing, for every request it
// leaves to distribution, which then answers as it always did: a caller who
// may not pull (distribution sends the challenge), another digest algorithm,
// an unknown manifest, a storage error, and an Accept header the manifest's
// type does not satisfy (distribution refuses or converts). An unknown tag
// it answers itself, with distribution's error.
func (h *Handler) serveManifest(w http.ResponseWriter, r *http.Request, rt Route) bool {
	if rt.Tag == "" && !digests.Canonical(rt.Digest) {
		return false
	}
	if !h.mayPull(r, rt) {
		return false
	}
	ctx := r.Context()
	d := rt.Digest
	if rt.Tag != "" {
		var err error
		d, err = h.layout.tag(ctx, rt.Name, rt.Tag)
		var unknown distribution.ErrTagUnknown
		if errors.As(err, &unknown) {
			// What distribution answers, without reading the tag again:
			// clients ask for tags they are about to push.
			w.Header().Set(apiVersionHeader, apiVersion)
			h.writeError(w, r, errcode.ErrorCodeManifestUnknown.WithDetail(unknown))
			return true
		}
		if err != nil {
			return false
		}
	}
	etag := `"` + d.String() + `"`
	if etagMatch(r, d, etag) {
		w.Header().Set(apiVersionHeader, apiVersion)
		w.WriteHeader(http.StatusNotModified)
		return true
	}
	m, ok := h.manifests.get(ctx, h, rt.Name, d)
	if !ok || !m.accepted(r, rt.Tag != "") {
		return false
	}
	ct, payload := m.contentType, m.payload
	// The headers Set would store, under the keys it would store them
	// by, their values in one allocation rather than one each.
	hd := w.Header()
	v := make([]string, 5)
	v[0], v[1], v[2], v[3], v[4] = apiVersion, ct, strconv.Itoa(len(payload)), d.String(), etag
	hd[apiVersionKey] = v[0:1:1]
	hd["Content-Type"] = v[1:2:2]
	hd["Content-Length"] = v[2:3:3]
	hd["Docker-Content-Digest"] = v[3:4:4]
	hd["Etag"] = v[4:5:5]
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(payload) // the client is gone: nothing to tell it
	}
	return true
}

// mayPull reports whether the request's caller may pull from the route's
// repository (always with auth off): the fast paths serve only such
// callers, and leave the others to distribution, which sends the challenge.
func (h *Handler) mayPull(r *http.Request, rt Route) bool {
	if h.guard == nil {
		return true
	}
	c, ok := api.CallerFrom(r.Context())
	if !ok {
		c = api.Resolve(r, h.guard.Auth, rt.Name, "pull")
	}
	return c.Granted()
}

// The header distribution sets on every response of its API.
const (
	apiVersionHeader = "Docker-Distribution-API-Version"
	apiVersion       = "registry/2.0"
	// apiVersionKey is apiVersionHeader as net/http keeps it in a Header.
	apiVersionKey = "Docker-Distribution-Api-Version"
)

// etagMatch reports whether an If-None-Match header of r names d, bare or
// quoted (etag), as distribution compares them.
func etagMatch(r *http.Request, d digest.Digest, etag string) bool {
	for _, v := range r.Header["If-None-Match"] {
		if v == d.String() || v == etag {
			return true
		}
	}
	return false
}

// storedManifest is a manifest as the fast path serves it: its bytes,
// their content type, and the media type an Accept header must name for
// distribution to serve them as they are.
type storedManifest struct {
	contentType string
	payload     []byte
	// accept is the media type the client must accept, "" for none;
	// acceptByTag only applies it to reads by tag.
	accept      string
	acceptByTag bool
}

// newStoredManifest classifies m as distribution's handler does: an OCI
// manifest or index is served only when accepted; a Docker manifest list
// read by tag only when accepted (otherwise distribution picks the
// linux/amd64 image from it); a Docker manifest always. It returns false for
// any other type, which is left to distribution.
func newStoredManifest(m distribution.Manifest) (*storedManifest, bool) {
	ct, payload, err := m.Payload()
	if err != nil {
		return nil, false
	}
	sm := &storedManifest{contentType: ct, payload: payload}
	switch m := m.(type) {
	case *ocischema.DeserializedManifest:
		sm.accept = v1.MediaTypeImageManifest
	case *manifestlist.DeserializedManifestList:
		switch m.MediaType {
		case v1.MediaTypeImageIndex:
			sm.accept = v1.MediaTypeImageIndex
		case manifestlist.MediaTypeManifestList:
			sm.accept, sm.acceptByTag = manifestlist.MediaTypeManifestList, true
		}
	case *schema2.DeserializedManifest:
	default:
		return nil, false
	}
	return sm, true
}

// accepted reports whether distribution would serve m as it is stored to r
// (a read by tag when byTag).
func (m *storedManifest) accepted(r *http.Request, byTag bool) bool {
	if m.accept == "" || (m.acceptByTag && !byTag) {
		return true
	}
	for _, h := range r.Header["Accept"] {
		for mt := range strings.SplitSeq(h, ",") {
			if mt, _, err := mime.ParseMediaType(mt); err == nil && mt == m.accept {
				return true
			}
		}
	}
	return false
}

// Bounds of the manifest cache: at most manifestCacheEntries manifests of at
// most manifestCacheMaxSize bytes each (4 MiB in all).
const (
	manifestCacheEntries = 256
	manifestCacheMaxSize = 16 << 10
)

// manifestCache keeps the bytes and classification of recently read
// manifests by digest, so that a read does not load and parse them again.
// A digest names the same bytes on every replica and forever, so an entry
// never goes stale; whether the repository still has the manifest is asked
// of storage on every read (Exists: its revision link and its blob, the
// checks distribution's Get makes), never of the cache.
type manifestCache struct {
	entries *lru.Cache[digest.Digest, *storedManifest]
}

func newManifestCache() (*manifestCache, error) {
	c, err := lru.New[digest.Digest, *storedManifest](manifestCacheEntries)
	if err != nil {
		return nil, fmt.Errorf("manifest cache: %w", err)
	}
	return &manifestCache{entries: c}, nil
}

// get returns manifest d of repo, false when repo does not have it, on a
// storage error, or when its type is left to distribution. A manifest in
// the cache costs the check that repo has it; another is read and parsed
// by distribution's manifest store.
func (c *manifestCache) get(ctx context.Context, h *Handler, repo string, d digest.Digest) (*storedManifest, bool) {
	if sm, ok := c.entries.Get(d); ok {
		exists, err := h.layout.hasManifest(ctx, repo, d)
		return sm, err == nil && exists
	}
	r, err := h.repository(ctx, repo)
	if err != nil {
		return nil, false
	}
	ms, err := r.Manifests(ctx)
	if err != nil {
		return nil, false
	}
	m, err := ms.Get(ctx, d)
	if err != nil {
		return nil, false
	}
	sm, ok := newStoredManifest(m)
	if ok && len(sm.payload) <= manifestCacheMaxSize {
		c.entries.Add(d, sm)
	}
	return sm, ok
}
