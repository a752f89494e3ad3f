package front

import (
	"context"
	"net/http"
	"regexp"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	pauth "github.com/portcullis/portcullis/auth"
	"github.com/portcullis/portcullis/auth/token"
	"github.com/portcullis/portcullis/internal/admission"
	"github.com/portcullis/portcullis/internal/referrers"
	"github.com/portcullis/portcullis/internal/server"
)

// Admission is the trust and webhook layer.
type Admission interface {
	Active(repo string) bool
	AdmitTag(ctx context.Context, p admission.TagPush) error
	AllowPull(ctx context.Context, p admission.Pull) error
	RecordPush(repo string, d digest.Digest, login string)
}

// legacySignatureTag matches the tags that hold signatures rather than
// images: cosign's older layout (sha256-<hex>.sig, .att, .sbom) and the OCI
// referrers tag schema (sha256-<hex>, an index of referrers, which notation
// writes by default).
var legacySignatureTag = regexp.MustCompile(`^sha256-[0-9a-f]{64}(\.sig|\.att|\.sbom)?$`)

// admitTag applies admission to a manifest PUT by tag. Signature, SBOM and
// attestation artifacts (anything with a subject, and cosign's legacy
// signature tags) are verified later, not gated. It answers the request and
// returns false when the push is refused.
func (h *Handler) admitTag(w http.ResponseWriter, r *http.Request, rt Route, body []byte, d, subject digest.Digest) bool {
	if h.admission == nil || rt.Tag == "" || !h.admission.Active(rt.Name) {
		return true
	}
	if subject != "" || legacySignatureTag.MatchString(rt.Tag) {
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
	canPush := false
	if h.guard != nil {
		s := h.guard.Tags.SubjectForLogin(login)
		granted, _ := h.guard.Tags.Grant(s, rt.Name, pauth.Push)
		canPush = granted&pauth.Push != 0
	}
	if err := h.admission.AllowPull(r.Context(), admission.Pull{Repository: rt.Name, Digest: d, Login: login, CanPush: canPush}); err != nil {
		h.writeError(w, r, err)
		return false
	}
	return true
}

func (h *Handler) resolveTag(ctx context.Context, repo, tag string) (digest.Digest, error) {
	named, err := reference.WithName(repo)
	if err != nil {
		return "", err
	}
	r, err := h.repos.Repository(ctx, named)
	if err != nil {
		return "", err
	}
	desc, err := r.Tags(ctx).Get(ctx, tag)
	if err != nil {
		return "", err
	}
	return desc.Digest, nil
}
