package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeFlags checks that --addr and --data take the place of http.addr
// and dataDir: the file's values are valid, so each error below can only
// come from the flag's value.
func TestServeFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, []byte("version: 1\ndataDir: "+filepath.Join(dir, "data")+"\nhttp:\n  addr: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		args    []string
		wantErr string
		usage   bool
	}{
		{"--addr replaces http.addr", []string{"--config", cfg, "--addr", "no-port-here"}, "http.addr", false},
		{"--data replaces dataDir", []string{"--config", cfg, "--data", "/dev/null/not-a-dir"}, "mkdir /dev/null", false},
		{"unknown flag", []string{"--adr", ":5000"}, "flag provided but not defined", true},
		{"argument", []string{"--addr", ":5000", "extra"}, "unexpected argument", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Cancelled: should a flag be ignored, the server stops at once
			// instead of serving.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			err := run(ctx, append([]string{"serve"}, tt.args...), strings.NewReader(""), new(bytes.Buffer), new(bytes.Buffer))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("serve %v: %v, want an error saying %q", tt.args, err, tt.wantErr)
			}
			var ue usageError
			if errors.As(err, &ue) != tt.usage {
				t.Errorf("serve %v: usage error %v, want %v", tt.args, !tt.usage, tt.usage)
			}
		})
	}
}
