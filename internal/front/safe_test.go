package front

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestSafeCore: a 5xx of the registry core reaches the client with its
// error code and a generic message, never the core's cause (a storage
// path); other answers pass unchanged.
func TestSafeCore(t *testing.T) {
	t.Parallel()
	const leak = `{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":"open /var/lib/portcullis/docker/registry/v2/repositories/a/_manifests/tags/xxx: file name too long"}]}`
	tests := []struct {
		name, body string
		status     int
		want       string
	}{
		{"internal error", leak, 500, `{"errors":[{"code":"UNKNOWN","message":"` + internalMessage + `"}]}`},
		{"unavailable", `{"errors":[{"code":"UNAVAILABLE","message":"s3: dial tcp 10.0.0.7:9000"}]}`, 503, `{"errors":[{"code":"UNAVAILABLE","message":"` + internalMessage + `"}]}`},
		{"not JSON", "panic: /srv/data", 502, `{"errors":[{"code":"UNKNOWN","message":"` + internalMessage + `"}]}`},
		{"client error", `{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}`, 404, ""},
	}
	for _, tt := range tests {
		core := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "999")
			w.WriteHeader(tt.status)
			_, _ = io.WriteString(w, tt.body)
		})
		rec := httptest.NewRecorder()
		safeCore{next: core, log: slog.New(slog.DiscardHandler)}.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/a/tags/list", nil))
		want := tt.want
		if want == "" {
			want = tt.body
		}
		if rec.Code != tt.status || rec.Body.String() != want {
			t.Errorf("%s: %d %s, want %d %s", tt.name, rec.Code, rec.Body, tt.status, want)
		}
		if tt.want != "" && (strings.Contains(rec.Body.String(), "/var/lib") || rec.Header().Get("Content-Length") == "999") {
			t.Errorf("%s: the cause or its length reached the client", tt.name)
		}
	}
}
