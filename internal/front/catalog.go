package front

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	pauth "github.com/portcullis/portcullis/auth"
	"github.com/portcullis/portcullis/internal/api"
)

// maxCatalogBody bounds the catalog page read back from the registry core
// for filtering (its page size is bounded by the configuration).
const maxCatalogBody = 16 << 20

// maxCatalogPages bounds the pages of the registry core read to fill one
// filtered catalog page.
const maxCatalogPages = 32

// serveCatalog serves GET /v2/_catalog with the repositories the caller
// may not pull left out, and the registry's own reserved repositories left
// out for everyone. The registry core authorizes the catalog itself (its
// challenge passes through unchanged) and pages it; the core's pages are
// read until the page asked for is full, and the Link header names only the
// last repository served, so that it reveals nothing left out.
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
	q := r.URL.Query()
	want, _ := strconv.Atoi(q.Get("n"))
	var kept []string
	more := false
	for page := 0; page < maxCatalogPages; page++ {
		buf := &bufferedWriter{header: http.Header{}}
		h.registry.ServeHTTP(buf, r)
		var body struct {
			Repositories []string `json:"repositories"`
		}
		if buf.status != http.StatusOK {
			buf.copyTo(w)
			return
		}
		if buf.body.Len() > maxCatalogBody || json.Unmarshal(buf.body.Bytes(), &body) != nil {
			h.writeError(w, r, api.Internal("could not filter the catalog", errors.New("the registry core's catalog page is too large or malformed")))
			return
		}
		for _, repo := range body.Repositories {
			if want > 0 && len(kept) == want {
				more = true
				break
			}
			if h.mayList(subject, repo) {
				kept = append(kept, repo)
			}
		}
		more = more || buf.header.Get("Link") != ""
		if !more || len(body.Repositories) == 0 || (want > 0 && len(kept) == want) || (want == 0 && len(kept) > 0) {
			break
		}
		// The next page of the core, after the last repository it listed.
		next := r.Clone(r.Context())
		nq := next.URL.Query()
		nq.Set("last", body.Repositories[len(body.Repositories)-1])
		next.URL.RawQuery = nq.Encode()
		r = next
		more = false
	}
	out, err := json.Marshal(struct {
		Repositories []string `json:"repositories"`
	}{Repositories: append([]string{}, kept...)})
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	if more && len(kept) > 0 {
		link := url.Values{"last": {kept[len(kept)-1]}}
		if want > 0 {
			link.Set("n", strconv.Itoa(want))
		}
		w.Header().Set("Link", fmt.Sprintf(`</v2/_catalog?%s>; rel="next"`, link.Encode()))
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

// mayList reports whether the catalog lists repo to subject.
func (h *Handler) mayList(subject pauth.Subject, repo string) bool {
	if slices.Contains(h.hidden, repo) {
		return false
	}
	if h.guard == nil {
		return true
	}
	granted, _ := h.guard.Tags.Grant(subject, repo, pauth.Pull)
	return granted&pauth.Pull != 0
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
