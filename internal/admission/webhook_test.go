package admission

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/server"
)

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// answering is a webhook that answers every review with status and body.
func answering(t *testing.T, status int, body string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestWebhookFailureMessages: a webhook that cannot give an answer refuses
// the push with the cause, never its answer's body nor its URL's query; an
// answer without "allowed" is such a failure; a denial without a reason
// says so. The cause is logged with the request id.
func TestWebhookFailureMessages(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(hanging.Close)
	t.Cleanup(func() { close(release) })
	gone := httptest.NewServer(http.NotFoundHandler())
	goneURL := gone.URL
	gone.Close()

	tests := []struct {
		name    string
		url     string
		timeout time.Duration
		policy  string
		want    string // the whole message; "" for an accepted push
		never   []string
		logged  string
	}{
		{name: "timeout", url: hanging.URL, timeout: 50 * time.Millisecond,
			want: "admission webhook policy-bot could not be asked: timed out after 50ms; the push is refused", logged: "timed out after 50ms"},
		{name: "HTTP 500", url: answering(t, 500, "panic: db password hunter2 at /srv/app.go:12").URL,
			want:  "admission webhook policy-bot could not be asked: answered HTTP 500; the push is refused",
			never: []string{"hunter2", "panic"}, logged: "panic: db password"},
		{name: "unknown field", url: answering(t, 200, `{"allowed":true,"uid":"705ab4f5"}`).URL,
			want: `admission webhook policy-bot could not be asked: answered with an invalid response: unknown field "uid"; the push is refused`},
		{name: "empty answer object", url: answering(t, 200, `{}`).URL,
			want: `admission webhook policy-bot could not be asked: answered with an invalid response: no "allowed" field; the push is refused`},
		{name: "empty answer object, failure policy ignore", url: answering(t, 200, `{}`).URL, policy: "ignore",
			logged: `no \"allowed\" field`},
		{name: "not JSON", url: answering(t, 200, `<html>secret page</html>`).URL,
			want:  "admission webhook policy-bot could not be asked: answered with an invalid response: invalid character '<' looking for beginning of value; the push is refused",
			never: []string{"secret page"}},
		{name: "other apiVersion", url: answering(t, 200, `{"apiVersion":"admission.portcullis/v2","allowed":true}`).URL,
			want: `admission webhook policy-bot could not be asked: answered with an invalid response: apiVersion "admission.portcullis/v2", want "admission.portcullis/v1"; the push is refused`},
		{name: "denied without a reason", url: answering(t, 200, `{"allowed":false}`).URL,
			want: "denied by admission webhook policy-bot: no reason given"},
		{name: "denied with a blank reason", url: answering(t, 200, `{"allowed":false,"reason":"  "}`).URL,
			want: "denied by admission webhook policy-bot: no reason given"},
		{name: "unreachable", url: goneURL + "/review?token=s3cret",
			never: []string{"s3cret", "token="}, logged: "could not be reached"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var logs syncBuffer
			hook := config.Webhook{Name: "policy-bot", URL: tt.url, Timeout: config.Duration(5 * time.Second), FailurePolicy: "fail"}
			if tt.timeout != 0 {
				hook.Timeout = config.Duration(tt.timeout)
			}
			if tt.policy != "" {
				hook.FailurePolicy = tt.policy
			}
			g := newGate(t, nil, hook)
			g.log = slog.New(server.ContextHandler{Handler: slog.NewJSONHandler(&logs, nil)})
			ctx := server.WithRequestID(context.Background(), "req-1")
			err := g.AdmitTag(ctx, tagPush())
			var ec errcode.Error
			switch {
			case tt.name == "unreachable":
				want := "admission webhook policy-bot could not be asked: " + goneURL + "/review could not be reached: "
				if !errors.As(err, &ec) || ec.Code != errcode.ErrorCodeDenied || !strings.HasPrefix(ec.Message, want) {
					t.Fatalf("AdmitTag: %v, want DENIED starting with %q", err, want)
				}
			case tt.want == "":
				if err != nil {
					t.Fatalf("AdmitTag: %v, want the push accepted", err)
				}
			case !errors.As(err, &ec) || ec.Code != errcode.ErrorCodeDenied || ec.Message != tt.want:
				t.Fatalf("AdmitTag: %v, want DENIED %q", err, tt.want)
			}
			for _, s := range tt.never {
				if err != nil && strings.Contains(err.Error(), s) {
					t.Errorf("the refusal tells %q: %v", s, err)
				}
			}
			if tt.logged != "" {
				out := logs.String()
				if !strings.Contains(out, tt.logged) || !strings.Contains(out, `"request_id":"req-1"`) || !strings.Contains(out, `"webhook":"policy-bot"`) {
					t.Errorf("log %s, want %q with the request id", out, tt.logged)
				}
			}
		})
	}
}
