package replication

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
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

// TestRealmRefused: a token realm on the registry's own machine, the
// cloud metadata service or in clear behind an https remote gets no
// request (and no credentials).
func TestRealmRefused(t *testing.T) {
	t.Parallel()
	for _, realm := range []string{
		"https://127.0.0.1:9000/token",
		"https://169.254.169.254/latest/meta-data",
		"http://auth.example/token",
	} {
		t.Run(realm, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(r.URL.Path, "/v2/") {
					w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`",service="registry.example"`)
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				_, _ = w.Write([]byte(`{"token":"t"}`))
			}))
			t.Cleanup(srv.Close)
			to, _ := url.Parse(srv.URL)
			rt := &routed{to: to}
			dir := t.TempDir()
			user, pass := dir+"/user", dir+"/pass"
			for p, v := range map[string]string{user: "robot", pass: "secret"} {
				if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			r, err := New(Options{Name: "up", URL: "https://registry.example", Transport: rt, UsernameFile: user, PasswordFile: pass})
			if err != nil {
				t.Fatal(err)
			}
			_, err = r.HeadManifest(t.Context(), "library/app", "v1")
			if !errors.Is(err, ErrUnauthorized) {
				t.Errorf("HeadManifest with realm %s: %v, want unauthorized", realm, err)
			}
			u, _ := url.Parse(realm)
			if slices.Contains(rt.asked(), u.Host) {
				t.Errorf("a request (with the credentials) was sent to the realm %s", realm)
			}
		})
	}
}
