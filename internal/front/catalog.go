package front

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"

	pauth "github.com/portcullis/portcullis/auth"
)

// maxCatalogBody bounds the catalog page read back from the registry core
// for filtering (its page size is bounded by the configuration).
const maxCatalogBody = 16 << 20

// serveCatalog serves GET /v2/_catalog with the repositories the caller
// may not pull left out, and the registry's own reserved repositories left
// out for everyone. The registry core authorizes the catalog itself (its
// challenge passes through unchanged) and pages it; a page may come back
// shorter than asked for, its Link header still leads on.
func (h *Handler) serveCatalog(w http.ResponseWriter, r *http.Request) {
	var subject pauth.Subject
	if h.guard != nil {
		grant, err := h.guard.Auth.Authorize(r) // identity only: the core checks the catalog access
		if err != nil {
			h.registry.ServeHTTP(w, r)
			return
		}
		subject = h.guard.Tags.SubjectForLogin(grant.Login)
	}
	buf := &bufferedWriter{header: http.Header{}}
	h.registry.ServeHTTP(buf, r)
	var page struct {
		Repositories []string `json:"repositories"`
	}
	if buf.status != http.StatusOK || buf.body.Len() > maxCatalogBody || json.Unmarshal(buf.body.Bytes(), &page) != nil {
		buf.copyTo(w)
		return
	}
	kept := page.Repositories[:0]
	for _, repo := range page.Repositories {
		if slices.Contains(h.hidden, repo) {
			continue
		}
		if h.guard != nil {
			if granted, _ := h.guard.Tags.Grant(subject, repo, pauth.Pull); granted&pauth.Pull == 0 {
				continue
			}
		}
		kept = append(kept, repo)
	}
	page.Repositories = kept
	body, err := json.Marshal(page)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	buf.body.Reset()
	buf.body.Write(body)
	buf.header.Set("Content-Length", strconv.Itoa(len(body)))
	buf.copyTo(w)
}

// bufferedWriter holds a response to rewrite before it is sent.
type bufferedWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedWriter) Header() http.Header { return b.header }

func (b *bufferedWriter) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

func (b *bufferedWriter) copyTo(w http.ResponseWriter) {
	for k, v := range b.header {
		w.Header()[k] = v
	}
	if b.status == 0 {
		b.status = http.StatusOK
	}
	w.WriteHeader(b.status)
	_, _ = w.Write(b.body.Bytes())
}
