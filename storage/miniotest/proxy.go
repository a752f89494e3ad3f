package miniotest

import (
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
)

// ReverseProxy returns a reverse proxy to the server that keeps each
// request's Host header (the client signed it), for a test that stands
// between a client and MinIO to watch or refuse requests. It serves HTTP
// servers only.
func (s *Server) ReverseProxy(tb testing.TB) *httputil.ReverseProxy {
	tb.Helper()
	u, err := url.Parse(s.Endpoint)
	if err != nil {
		tb.Fatalf("miniotest: %v", err)
	}
	p := httputil.NewSingleHostReverseProxy(u)
	director := p.Director
	p.Director = func(r *http.Request) { host := r.Host; director(r); r.Host = host }
	return p
}

// Describe names an S3 request sent with path-style addressing as
// "METHOD key": a listing as "LIST prefix", a multi-object delete as
// "DELETE-MULTI", a server-side copy as "COPY key".
func Describe(r *http.Request) string {
	key := strings.TrimPrefix(r.URL.Path, "/")
	_, key, _ = strings.Cut(key, "/") // the bucket
	op := r.Method
	switch q := r.URL.Query(); {
	case r.Method == http.MethodGet && q.Has("list-type"):
		op, key = "LIST", q.Get("prefix")
	case r.Method == http.MethodPost && q.Has("delete"):
		op = "DELETE-MULTI"
	case r.Method == http.MethodPut && r.Header.Get("X-Amz-Copy-Source") != "":
		op = "COPY"
	}
	return op + " " + key
}
