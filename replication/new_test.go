package replication

import (
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNewValidates(t *testing.T) {
	t.Parallel()
	uf, pf := writeCredentials(t, "alice", "pw")
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		o       Options
		wantErr string // "" for success
	}{
		{"minimal", Options{Name: "hub", URL: "https://registry-1.docker.io"}, ""},
		{"trailing slash and port", Options{Name: "hub", URL: "http://10.0.0.1:5000/"}, ""},
		{"credentials", Options{Name: "hub", URL: "https://r", UsernameFile: uf, PasswordFile: pf}, ""},
		{"no name", Options{URL: "https://r"}, "name is required"},
		{"no url", Options{Name: "hub"}, "url: required"},
		{"scheme", Options{Name: "hub", URL: "ftp://r"}, "scheme must be http or https"},
		{"no scheme", Options{Name: "hub", URL: "registry-1.docker.io"}, "scheme must be http or https"},
		{"path", Options{Name: "hub", URL: "https://r/v2"}, "must not have a path"},
		{"query", Options{Name: "hub", URL: "https://r?x=1"}, "must not have a path"},
		{"user info", Options{Name: "hub", URL: "https://alice:pw@r"}, "credentials in the URL"},
		{"username only", Options{Name: "hub", URL: "https://r", UsernameFile: uf}, "must be set together"},
		{"password only", Options{Name: "hub", URL: "https://r", PasswordFile: pf}, "must be set together"},
		{"missing file", Options{Name: "hub", URL: "https://r", UsernameFile: uf, PasswordFile: pf + ".missing"}, "no such file"},
		{"missing CA", Options{Name: "hub", URL: "https://r", CAFile: notPEM + ".missing"}, "read CA file"},
		{"CA not PEM", Options{Name: "hub", URL: "https://r", CAFile: notPEM}, "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := New(tc.o)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if r.Name() != tc.o.Name || !strings.HasPrefix(tc.o.URL, r.URL()) || strings.HasSuffix(r.URL(), "/") {
					t.Errorf("Name, URL = %q, %q for %+v", r.Name(), r.URL(), tc.o)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New: err = %v, want one containing %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "alice:pw") {
				t.Errorf("error %q shows the credentials", err)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	block := &pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}
	if err := os.WriteFile(caFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		o       Options
		wantErr error
	}{
		{"unknown authority", Options{}, ErrUnavailable},
		{"CA file", Options{CAFile: caFile}, nil},
		{"verification off", Options{InsecureSkipVerify: true}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.o.Name, tc.o.URL = "tls", srv.URL
			r, err := New(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Ping(t.Context()); !errors.Is(err, tc.wantErr) {
				t.Errorf("Ping: err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}
