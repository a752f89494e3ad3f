package replication

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
)

// routed sends every request, whatever its host, to one test server, and
// records the hosts asked for.
type routed struct {
	to    *url.URL
	mu    sync.Mutex
	hosts []string
}

func (rt *routed) RoundTrip(req *http.Request) (*http.Response, error) {
	rt.mu.Lock()
	rt.hosts = append(rt.hosts, req.URL.Host)
	rt.mu.Unlock()
	r2 := req.Clone(req.Context())
	r2.URL.Scheme, r2.URL.Host = rt.to.Scheme, rt.to.Host
	return http.DefaultTransport.RoundTrip(r2)
}

func (rt *routed) asked() []string {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return slices.Clone(rt.hosts)
}

// TestRedirects: a blob redirect to a CDN is followed; one to the
// registry's own machine, the cloud metadata service or from https to
// http is refused before anything is sent there.
func TestRedirects(t *testing.T) {
	t.Parallel()
	blob := []byte("layer bytes")
	d := digest.FromBytes(blob)
	for _, tc := range []struct {
		name, remote, location string
		refused                bool
	}{
		{"cdn", "https://registry.example", "https://cdn.example/blob", false},
		{"same loopback host as the remote", "http://127.0.0.1:5000", "http://127.0.0.1:9000/blob", false},
		{"loopback", "https://registry.example", "https://127.0.0.1:9000/blob", true},
		{"localhost", "https://registry.example", "https://localhost/blob", true},
		{"ipv6 loopback", "https://registry.example", "https://[::1]/blob", true},
		{"metadata service", "https://registry.example", "https://169.254.169.254/latest/meta-data", true},
		{"metadata service from a loopback remote", "http://127.0.0.1:5000", "http://169.254.169.254/latest/meta-data", true},
		{"unspecified", "https://registry.example", "https://0.0.0.0/blob", true},
		{"downgrade", "https://registry.example", "http://cdn.example/blob", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(r.URL.Path, "/v2/") {
					http.Redirect(w, r, tc.location, http.StatusTemporaryRedirect)
					return
				}
				_, _ = w.Write(blob)
			}))
			t.Cleanup(srv.Close)
			to, _ := url.Parse(srv.URL)
			rt := &routed{to: to}
			r, err := New(Options{Name: "up", URL: tc.remote, Transport: rt})
			if err != nil {
				t.Fatal(err)
			}
			body, _, err := r.GetBlob(t.Context(), "library/app", d)
			target, _ := url.Parse(tc.location)
			if tc.refused {
				if !errors.Is(err, errRedirect) || !errors.Is(err, ErrUnavailable) {
					t.Errorf("GetBlob redirected to %s: err %v, want a refused redirect (unavailable)", tc.location, err)
				}
				if slices.Contains(rt.asked(), target.Host) {
					t.Errorf("a request was sent to %s", target.Host)
				}
				return
			}
			if err != nil {
				t.Fatalf("GetBlob redirected to %s: %v", tc.location, err)
			}
			defer body.Close()
			got, _ := io.ReadAll(body)
			if string(got) != string(blob) {
				t.Errorf("blob through the redirect: %q, want %q", got, blob)
			}
		})
	}
}
