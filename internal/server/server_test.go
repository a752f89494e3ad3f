package server

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestWrap(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(ContextHandler{slog.NewJSONHandler(&logs, nil)})
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var seenID string
	h := Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenID = RequestID(r.Context())
		switch r.URL.Path {
		case "/v2/a/manifests/boom":
			panic("kaboom")
		case "/v2/a/blobs/uploads/x":
			_, _ = io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusAccepted)
		default:
			_, _ = io.WriteString(w, "hello")
		}
	}), Options{Log: log, Metrics: m, AccessLog: true})
	srv := httptest.NewServer(h)
	defer srv.Close()

	// A valid caller id is kept; a forged one is replaced.
	for _, tc := range []struct{ in, want string }{{"abc-123", "abc-123"}, {"bad id;<script>", ""}, {"", ""}} {
		req, _ := http.NewRequest("GET", srv.URL+"/v2/", nil)
		if tc.in != "" {
			req.Header.Set(RequestIDHeader, tc.in)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Get(RequestIDHeader)
		if got == "" || got != seenID || (tc.want != "" && got != tc.want) || (tc.want == "" && got == tc.in) {
			t.Errorf("request id for %q: header %q, handler saw %q", tc.in, got, seenID)
		}
	}

	// A panic becomes a 500 OCI error and the server keeps serving.
	resp, err := http.Get(srv.URL + "/v2/a/manifests/boom")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 500 || !strings.Contains(string(body), `"code":"UNKNOWN"`) {
		t.Errorf("panic: %d %s", resp.StatusCode, body)
	}
	resp, err = http.Post(srv.URL+"/v2/a/blobs/uploads/x", "application/octet-stream", strings.NewReader("12345"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	if got := testutil.ToFloat64(m.requests.WithLabelValues("GET", RouteBase, "200")); got != 3 {
		t.Errorf("requests{GET,base,200} = %v, want 3", got)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("GET", RouteManifest, "500")); got != 1 {
		t.Errorf("requests{GET,manifest,500} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.bytesIn.WithLabelValues(RouteBlobUpload)); got != 5 {
		t.Errorf("request bytes for uploads = %v, want 5", got)
	}
	if got := testutil.ToFloat64(m.bytesOut.WithLabelValues(RouteBase)); got != 15 {
		t.Errorf("response bytes for base = %v, want 15", got)
	}
	if got := testutil.ToFloat64(m.uploadsInFlight); got != 0 {
		t.Errorf("uploads in flight after all finished = %v", got)
	}
	// Every access line carries the request id.
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if !strings.Contains(line, `"request_id":"`) {
			t.Errorf("log line without request id: %s", line)
		}
	}
}

func TestClassifyRouteIsBounded(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range []string{"/v2/", "/v2/_catalog", "/v2/x/tags/list", "/v2/x/manifests/y", "/v2/x/blobs/sha256:1",
		"/v2/x/blobs/uploads/", "/v2/x/referrers/sha256:1", "/token", "/api/v1/x", "/metrics", "/healthz", "/readyz",
		"/anything/else", "/v2/zzz"} {
		seen[ClassifyRoute(p)] = true
	}
	if len(seen) != 12 {
		t.Errorf("route classes = %v, want all 12", seen)
	}
	if methodLabel("BREW") != "OTHER" || codeLabel(1000) != "other" {
		t.Error("unbounded label values")
	}
}
