package front

import (
	"context"
	"net/http"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	pauth "github.com/portcullis/portcullis/auth"
	"github.com/portcullis/portcullis/auth/token"
	"github.com/portcullis/portcullis/internal/admission"
	"github.com/portcullis/portcullis/internal/api"
	"github.com/portcullis/portcullis/internal/referrers"
	"github.com/portcullis/portcullis/internal/server"
)

// Admission is the trust and webhook layer.
type Admission interface {
	Active(repo string) bool
	AdmitTag(ctx context.Context, p admission.TagPush) error
	AllowPull(ctx context.Context, p admission.Pull) error
	AllowBlob(ctx context.Context, b admission.BlobRead) error
	RecordPush(repo string, d digest.Digest, login string)
}

// admitTag applies admission to a manifest PUT that creates or moves a tag,
// whatever the manifest carries: a subject does not exempt a tagged push.
// Pushes by digest are not gated (signatures, SBOMs and attestations
// arrive so, and are verified, not gated), nor are signature, attestation
// and SBOM artifacts under cosign's signature tags and indexes of referrers
// under the OCI referrers tag schema (admission.ExemptTag). It answers the
// request and returns false when the push is refused.
func (h *Handler) admitTag(w http.ResponseWriter, r *http.Request, rt Route, body []byte, d digest.Digest) bool {
	if h.admission == nil || rt.Tag == "" || !h.admission.Active(rt.Name) {
		return true
	}
	if admission.ExemptTag(r.Context(), rt.Tag, body, func(ctx context.Context, child digest.Digest) (digest.Digest, error) {
		return h.subjectOf(ctx, rt.Name, child)
	}) {
		return true
	}
	err := h.admission.AdmitTag(r.Context(), admission.TagPush{
		Repository: rt.Name, Tag: rt.Tag, Digest: d, MediaType: mediaTypeOf(r, body), Manifest: body,
		Pusher: callerOf(r).Login, Addr: token.RemoteHost(r), RequestID: server.RequestID(r.Context()), Host: r.Host,
	})
	if err != nil {
		h.writeError(w, r, err)
		return false
	}
	return true
}

func mediaTypeOf(r *http.Request, body []byte) string {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		return ct
	}
	_, desc, err := referrers.Describe("", body)
	if err != nil {
		return ""
	}
	return desc.MediaType
}

// allowPull applies quarantine to a manifest GET or HEAD. It answers the
// request and returns false when the content is withheld.
func (h *Handler) allowPull(w http.ResponseWriter, r *http.Request, rt Route) bool {
	if h.admission == nil || !h.admission.Active(rt.Name) {
		return true
	}
	c := callerOf(r)
	if h.guard != nil && !c.Granted() {
		return true // distribution answers with the challenge
	}
	login := c.Login
	d := rt.Digest
	if d == "" {
		var err error
		if d, err = h.resolveTag(r.Context(), rt.Name, rt.Tag); err != nil {
			return true // unknown tag: distribution answers 404
		}
	}
	err := h.admission.AllowPull(r.Context(), admission.Pull{Repository: rt.Name, Digest: d, Tag: rt.Tag, Login: login, CanPush: h.canPush(login, rt.Name)})
	if err != nil {
		h.writeError(w, r, err)
		return false
	}
	return true
}

// Withheld returns the refusal of a read of repo@d by login when the
// content is quarantined from login, nil otherwise: for the routes of the
// /api/v1/ that serve what content reveals (its SBOM).
func (h *Handler) Withheld(ctx context.Context, repo string, d digest.Digest, login string) error {
	if h.admission == nil || !h.admission.Active(repo) {
		return nil
	}
	return h.admission.AllowPull(ctx, admission.Pull{Repository: repo, Digest: d, Login: login, CanPush: h.canPush(login, repo)})
}

// canPush reports whether login may push to repo (and so may read what is
// withheld there: signing means pushing). With auth off everyone may.
func (h *Handler) canPush(login, repo string) bool {
	if h.cache.Owns(repo) {
		// Nobody pushes into a cache namespace: its content is judged
		// by the repository's policies for every reader, with auth off too.
		return false
	}
	if h.guard == nil {
		return true
	}
	granted, _ := h.guard.Tags.Grant(h.guard.Tags.SubjectForLogin(login), repo, pauth.Push)
	return granted&pauth.Push != 0
}

// allowBlob applies quarantine to a blob GET: a config, a layer or a
// manifest revision read as a blob is withheld unless released content of
// the repository uses it. HEAD reveals no content and is not gated. It
// answers the request and returns false when the blob is withheld.
func (h *Handler) allowBlob(w http.ResponseWriter, r *http.Request, rt Route) bool {
	if h.admission == nil || r.Method != http.MethodGet || !h.admission.Active(rt.Name) {
		return true
	}
	c := callerOf(r)
	if h.guard != nil && !c.Granted() {
		return true // distribution answers with the challenge
	}
	// In a cache namespace a blob not stored yet is fetched from the
	// remote: it is judged by the manifests that use it all the same.
	err := h.admission.AllowBlob(r.Context(), admission.BlobRead{Repository: rt.Name, Digest: rt.Digest, Login: c.Login,
		CanPush: h.canPush(c.Login, rt.Name), Fetchable: h.cache.Owns(rt.Name)})
	if err != nil {
		h.writeError(w, r, err)
		return false
	}
	return true
}

// gateMount turns a cross-repository mount of a withheld blob into an
// ordinary upload: POST /v2/<name>/blobs/uploads/?mount=D&from=R would
// otherwise copy a blob that R withholds from the caller into a repository
// the caller may read. The client then uploads the blob itself, as the
// distribution spec lets a registry answer a mount.
func (h *Handler) gateMount(r *http.Request, rt Route) *http.Request {
	if h.admission == nil || r.Method != http.MethodPost || rt.Kind != KindUpload {
		return r
	}
	q := r.URL.Query()
	from, mount := q.Get("from"), q.Get("mount")
	if from == "" || mount == "" ||
		!pauth.ValidRepository(from) || !h.admission.Active(from) {
		return r
	}
	d, err := digest.Parse(mount)
	if err != nil {
		return r
	}
	var auth api.Authorizer
	if h.guard != nil {
		auth = h.guard.Auth
	}
	c := api.Resolve(r, auth, from, "pull")
	if c.Granted() {
		if err := h.admission.AllowBlob(r.Context(), admission.BlobRead{Repository: from, Digest: d, Login: c.Login, CanPush: h.canPush(c.Login, from)}); err == nil {
			return r
		}
	}
	q.Del("mount")
	q.Del("from")
	r2 := r.Clone(r.Context())
	r2.URL.RawQuery = q.Encode()
	return r2
}

// allowReferrers applies quarantine to the referrers of a subject: the list
// of a withheld manifest is withheld with it.
func (h *Handler) allowReferrers(w http.ResponseWriter, r *http.Request, rt Route) bool {
	if h.admission == nil || !h.admission.Active(rt.Name) {
		return true
	}
	login := callerOf(r).Login
	err := h.admission.AllowPull(r.Context(), admission.Pull{Repository: rt.Name, Digest: rt.Digest, Login: login, CanPush: h.canPush(login, rt.Name)})
	if err != nil {
		h.writeError(w, r, err)
		return false
	}
	return true
}

// repository opens repository repo of the registry's storage.
func (h *Handler) repository(ctx context.Context, repo string) (distribution.Repository, error) {
	named, err := reference.WithName(repo)
	if err != nil {
		return nil, err
	}
	return h.repos.Repository(ctx, named)
}

// subjectOf returns the subject of manifest d stored in repo, "" if none.
func (h *Handler) subjectOf(ctx context.Context, repo string, d digest.Digest) (digest.Digest, error) {
	r, err := h.repository(ctx, repo)
	if err != nil {
		return "", err
	}
	ms, err := r.Manifests(ctx)
	if err != nil {
		return "", err
	}
	m, err := ms.Get(ctx, d)
	if err != nil {
		return "", err
	}
	_, payload, err := m.Payload()
	if err != nil {
		return "", err
	}
	return referrers.SubjectOf(payload), nil
}

func (h *Handler) resolveTag(ctx context.Context, repo, tag string) (digest.Digest, error) {
	r, err := h.repository(ctx, repo)
	if err != nil {
		return "", err
	}
	desc, err := r.Tags(ctx).Get(ctx, tag)
	if err != nil {
		return "", err
	}
	return desc.Digest, nil
}
