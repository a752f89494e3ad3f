package front

import (
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/manifest/manifestlist"
	"github.com/distribution/distribution/v3/manifest/ocischema"
	"github.com/distribution/distribution/v3/manifest/schema2"
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
// an unknown tag or manifest, a storage error, and an Accept header the
// manifest's type does not satisfy (distribution refuses or converts).
func (h *Handler) serveManifest(w http.ResponseWriter, r *http.Request, rt Route) bool {
	if rt.Tag == "" && !digests.Canonical(rt.Digest) {
		return false
	}
	if h.guard != nil {
		c, ok := api.CallerFrom(r.Context())
		if !ok {
			c = api.Resolve(r, h.guard.Auth, rt.Name, "pull")
		}
		if !c.Granted() {
			return false
		}
	}
	ctx := r.Context()
	repo, err := h.repository(ctx, rt.Name)
	if err != nil {
		return false
	}
	d := rt.Digest
	if rt.Tag != "" {
		desc, err := repo.Tags(ctx).Get(ctx, rt.Tag)
		if err != nil {
			return false
		}
		d = desc.Digest
	}
	etag := `"` + d.String() + `"`
	if etagMatch(r, d, etag) {
		w.Header().Set(apiVersionHeader, apiVersion)
		w.WriteHeader(http.StatusNotModified)
		return true
	}
	ms, err := repo.Manifests(ctx)
	if err != nil {
		return false
	}
	m, err := ms.Get(ctx, d)
	if err != nil {
		return false
	}
	if !accepts(r, m, rt.Tag != "") {
		return false
	}
	ct, payload, err := m.Payload()
	if err != nil {
		return false
	}
	hd := w.Header()
	hd.Set(apiVersionHeader, apiVersion)
	hd.Set("Content-Type", ct)
	hd.Set("Content-Length", strconv.Itoa(len(payload)))
	hd.Set("Docker-Content-Digest", d.String())
	hd.Set("Etag", etag)
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(payload) // the client is gone: nothing to tell it
	}
	return true
}

// The header distribution sets on every response of its API.
const (
	apiVersionHeader = "Docker-Distribution-API-Version"
	apiVersion       = "registry/2.0"
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

// accepts reports whether distribution would serve m as it is stored to a
// request with r's Accept headers: an OCI manifest or index only when
// accepted; a Docker manifest list by tag only when accepted (otherwise
// distribution picks the linux/amd64 image from it).
func accepts(r *http.Request, m distribution.Manifest, byTag bool) bool {
	var want string
	switch m := m.(type) {
	case *ocischema.DeserializedManifest:
		want = v1.MediaTypeImageManifest
	case *manifestlist.DeserializedManifestList:
		switch {
		case m.MediaType == v1.MediaTypeImageIndex:
			want = v1.MediaTypeImageIndex
		case m.MediaType == manifestlist.MediaTypeManifestList && byTag:
			want = manifestlist.MediaTypeManifestList
		}
	case *schema2.DeserializedManifest:
	default:
		return false
	}
	if want == "" {
		return true
	}
	for _, h := range r.Header["Accept"] {
		for mt := range strings.SplitSeq(h, ",") {
			if mt, _, err := mime.ParseMediaType(mt); err == nil && mt == want {
				return true
			}
		}
	}
	return false
}
