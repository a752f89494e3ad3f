package app

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/portcullis/portcullis/config"
)

// TestRequestKeepsGeneration: a request under way when the generation is
// swapped finishes with the one it started under; the next request gets
// the new one.
func TestRequestKeepsGeneration(t *testing.T) {
	t.Parallel()
	a := &App{}
	started, release := make(chan struct{}), make(chan struct{})
	gen := func(id uint64) *generation {
		return &generation{id: id, registry: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				close(started)
				<-release
			}
			// Read the generation again at the end, as a handler deep in
			// the request would.
			fmt.Fprintf(w, "%d %d", id, generationOf(r.Context()).id)
		})}
	}
	a.gen.Store(gen(1))
	srv := httptest.NewServer(a.serveGeneration(route(func(g *generation) http.Handler { return g.registry })))
	defer srv.Close()
	get := func(path string) string {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Error(err)
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	slow := make(chan string)
	go func() { slow <- get("/slow") }()
	<-started
	a.gen.Store(gen(2))
	if got := get("/fast"); got != "2 2" {
		t.Errorf("request after the swap: %q, want generation 2", got)
	}
	close(release)
	if got := <-slow; got != "1 1" {
		t.Errorf("request under way at the swap: %q, want generation 1 throughout", got)
	}
}

// TestRestartKeys: a reload may change the live sections only; the keys
// it may not change are named.
func TestRestartKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(c *config.Config)
		want   []string
	}{
		{name: "live only", change: func(c *config.Config) {
			c.Auth.Users = []config.AuthUser{{Name: "alice", PasswordFile: "pw"}}
			c.Auth.Token.VerificationKeyFiles = []string{"old.pem"}
			c.Trust.Keys = []config.TrustKey{{Name: "k", File: "k.pub"}}
			c.Admission.Webhooks = []config.Webhook{{URL: "https://h"}}
			c.Scan.Policies = []config.ScanPolicy{{Repositories: []string{"**"}}}
			c.HTTP.TLS = config.TLS{CertFile: "new.crt", KeyFile: "new.key"}
			c.Reload.Watch = true
		}},
		{name: "restart", change: func(c *config.Config) {
			c.HTTP.Addr = ":1"
			c.Storage.S3 = &config.S3{Bucket: "b"}
			c.Auth.Enabled = false
			c.Auth.Audit.File = "other.log"
			c.Log.Level = "debug"
			c.Cache = []config.Cache{{Prefix: "hub"}}
		}, want: []string{"http.addr", "log.level", "storage.s3", "auth.enabled", "auth.audit.file", "cache"}},
		{name: "tls turned off", change: func(c *config.Config) { c.HTTP.TLS = config.TLS{} },
			want: []string{"http.tls"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			running := config.Default()
			running.Auth.Enabled = true
			running.HTTP.TLS = config.TLS{CertFile: "a.crt", KeyFile: "a.key"}
			next := config.Default()
			next.Auth.Enabled = true
			next.HTTP.TLS = running.HTTP.TLS
			tc.change(next)
			if diff := cmp.Diff(tc.want, restartKeys(running, next)); diff != "" {
				t.Errorf("restartKeys (-want +got):\n%s", diff)
			}
		})
	}
}

// BenchmarkServeGeneration measures what taking the generation costs a
// request: the same handler served directly and through serveGeneration
// and route.
func BenchmarkServeGeneration(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	a := &App{}
	a.gen.Store(&generation{id: 1, registry: h})
	for _, bc := range []struct {
		name string
		h    http.Handler
	}{
		{"direct", h},
		{"generation", a.serveGeneration(route(func(g *generation) http.Handler { return g.registry }))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodGet, "/v2/", nil)
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				bc.h.ServeHTTP(w, r)
			}
		})
	}
}
