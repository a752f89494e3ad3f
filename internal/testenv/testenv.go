// Package testenv starts a whole registry in-process for handler tests: the
// real App behind httptest, on a temporary data directory.
package testenv

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/app"
)

// Registry is a running in-process registry.
type Registry struct {
	// URL is the base URL, http://127.0.0.1:port.
	URL string
	// Host is host:port, for image references.
	Host string
	// Config is the configuration it runs with.
	Config *config.Config
	App    *app.App
	logs   *Buffer
}

// Logs returns everything logged so far.
func (r *Registry) Logs() string { return r.logs.String() }

// Start runs a registry on a fresh data dir; mutate adjusts the default
// configuration first. It is stopped in t.Cleanup.
func Start(t testing.TB, mutate func(*config.Config)) *Registry {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Log.Level = "debug"
	if mutate != nil {
		mutate(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &Buffer{}
	log, err := app.NewLogger(cfg.Log, logs)
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(context.Background(), cfg, log, app.Options{})
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(func() {
		srv.Close()
		if err := a.Close(); err != nil {
			t.Errorf("close app: %v", err)
		}
	})
	return &Registry{URL: srv.URL, Host: strings.TrimPrefix(srv.URL, "http://"), Config: cfg, App: a, logs: logs}
}

// Buffer collects a process's or a logger's output; it is safe for one
// writer and concurrent readers.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
