package front

import (
	"net/http"
	"net/http/httptest"
	"net/url"

	"github.com/portcullis/portcullis/internal/api"
)

// isMonolithicPost reports a single-request blob upload: POST
// /v2/<name>/blobs/uploads/?digest=<d> with the blob as body, which the
// distribution spec allows and the registry core does not serve.
func isMonolithicPost(r *http.Request, rt Route) bool {
	if r.Method != http.MethodPost || rt.Kind != KindUpload || rt.Upload != "" {
		return false
	}
	q := r.URL.Query()
	return q.Get("digest") != "" && q.Get("mount") == "" && r.ContentLength != 0
}

// monolithicPost serves a single-request upload as the core's two steps:
// open a session (POST without digest), then complete it with the body
// (PUT ?digest=). Each step is authorized by the core as usual.
func (h *Handler) monolithicPost(w http.ResponseWriter, r *http.Request) {
	dgst := r.URL.Query().Get("digest")
	open := r.Clone(r.Context())
	open.Body, open.ContentLength = http.NoBody, 0
	open.Header.Del("Content-Type")
	q := open.URL.Query()
	q.Del("digest")
	open.URL.RawQuery = q.Encode()
	rec := httptest.NewRecorder()
	h.registry.ServeHTTP(rec, open)
	if rec.Code != http.StatusAccepted {
		// Pass the core's refusal (a challenge, an invalid name) through.
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
		return
	}
	loc, err := url.Parse(rec.Header().Get("Location"))
	if err != nil {
		api.WriteError(w, r, h.log, api.Internal("upload session without a location", err))
		return
	}
	put := r.Clone(r.Context())
	put.Method = http.MethodPut
	put.URL.Path, put.URL.RawPath = loc.Path, ""
	lq := loc.Query()
	lq.Set("digest", dgst)
	put.URL.RawQuery = lq.Encode()
	put.RequestURI = put.URL.RequestURI()
	h.registry.ServeHTTP(w, put)
}
