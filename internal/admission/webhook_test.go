package admission

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/prometheus/client_golang/prometheus"

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
		// neverLogged must not be in the log.
		neverLogged string
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
		{name: "empty body", url: answering(t, 200, "\n").URL,
			want: "admission webhook policy-bot could not be asked: answered with an invalid response: an empty body; the push is refused"},
		{name: "not an object", url: answering(t, 200, `[true]`).URL,
			want: "admission webhook policy-bot could not be asked: answered with an invalid response: a JSON array, not an object; the push is refused"},
		{name: "allowed not a boolean", url: answering(t, 200, `{"allowed":"yes"}`).URL,
			want: `admission webhook policy-bot could not be asked: answered with an invalid response: "allowed" is a JSON string; the push is refused`},
		{name: "other apiVersion", url: answering(t, 200, `{"apiVersion":"admission.portcullis/v2","allowed":true}`).URL,
			want: `admission webhook policy-bot could not be asked: answered with an invalid response: apiVersion "admission.portcullis/v2", want "admission.portcullis/v1"; the push is refused`},
		{name: "denied without a reason", url: answering(t, 200, `{"allowed":false}`).URL,
			want: "denied by admission webhook policy-bot: no reason given"},
		{name: "denied with a blank reason", url: answering(t, 200, `{"allowed":false,"reason":"  "}`).URL,
			want: "denied by admission webhook policy-bot: no reason given"},
		{name: "unreachable", url: goneURL + "/review?token=s3cret",
			never: []string{"s3cret", "token="}, logged: "could not be reached", neverLogged: "s3cret"},
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
			if tt.neverLogged != "" && strings.Contains(logs.String(), tt.neverLogged) {
				t.Errorf("the log tells %q: %s", tt.neverLogged, logs.String())
			}
		})
	}
}

// signedReviewer is a webhook that allows a review only when it is signed
// with its current secret at the expected time, as README.md tells a
// receiver to check.
type signedReviewer struct {
	srv *httptest.Server

	mu      sync.Mutex
	secret  string
	wantTS  string
	headers []http.Header
}

func newSignedReviewer(t *testing.T, secret, wantTS string) *signedReviewer {
	t.Helper()
	sr := &signedReviewer{secret: secret, wantTS: wantTS}
	sr.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sr.mu.Lock()
		secret, wantTS := sr.secret, sr.wantTS
		sr.headers = append(sr.headers, r.Header.Clone())
		sr.mu.Unlock()
		ts := r.Header.Get("X-Portcullis-Timestamp")
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(ts + "." + string(body)))
		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		ok := ts == wantTS && hmac.Equal([]byte(want), []byte(r.Header.Get("X-Portcullis-Signature")))
		if !ok {
			_, _ = w.Write([]byte(`{"allowed":false,"reason":"bad signature"}`))
			return
		}
		_, _ = w.Write([]byte(`{"allowed":true}`))
	}))
	t.Cleanup(sr.srv.Close)
	return sr
}

func (sr *signedReviewer) expect(secret string) {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	sr.secret = secret
}

// TestWebhookSignature: with a secretFile every review is signed over
// "<timestamp>.<body>"; a new secret in the file is used from the next
// review on; without one no signature is sent.
func TestWebhookSignature(t *testing.T) {
	t.Parallel()
	at := time.Unix(1780000000, 0)
	sr := newSignedReviewer(t, "first secret", "1780000000")
	secretPath := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretPath, []byte("first secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hook := config.Webhook{Name: "signed", URL: sr.srv.URL, Timeout: config.Duration(5 * time.Second), FailurePolicy: "fail",
		SecretFile: secretPath}
	g := newGate(t, nil, hook)
	g.webhooks[0].now = func() time.Time { return at }
	if err := g.AdmitTag(context.Background(), tagPush()); err != nil {
		t.Fatalf("signed review: %v", err)
	}

	// The secret is rotated: the webhook expects the new one, the file
	// holds it.
	sr.expect("second, longer secret")
	if err := g.AdmitTag(context.Background(), tagPush()); err == nil || !strings.Contains(err.Error(), "bad signature") {
		t.Fatalf("review signed with the old secret: %v, want the webhook's refusal", err)
	}
	if err := os.WriteFile(secretPath, []byte("second, longer secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.AdmitTag(context.Background(), tagPush()); err != nil {
		t.Fatalf("review after the secret file changed: %v", err)
	}

	// The file is removed while a new one is written: the last secret
	// signs.
	if err := os.Remove(secretPath); err != nil {
		t.Fatal(err)
	}
	if err := g.AdmitTag(context.Background(), tagPush()); err != nil {
		t.Fatalf("review while the secret file is missing: %v", err)
	}

	// Without a secretFile, nothing is signed.
	rv := newReviewer(t, allowAll)
	g = newGate(t, nil, rv.hook())
	if err := g.AdmitTag(context.Background(), tagPush()); err != nil {
		t.Fatal(err)
	}
	rv.mu.Lock()
	h := rv.header[0]
	rv.mu.Unlock()
	if h.Get("X-Portcullis-Signature") != "" || h.Get("X-Portcullis-Timestamp") != "" {
		t.Errorf("unsigned webhook got signature headers %v", h)
	}
}

// TestWebhookFilesAtStart: a secret file, client certificate or key that
// cannot be read stops the gate from starting.
func TestWebhookFilesAtStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		hook config.Webhook
		want string
	}{
		{"missing secret", config.Webhook{SecretFile: filepath.Join(dir, "nope")}, "webhook w: secretFile: "},
		{"empty secret", config.Webhook{SecretFile: empty}, "webhook w: secretFile: " + empty + " is empty"},
		{"missing certificate", config.Webhook{CertFile: filepath.Join(dir, "c.pem"), KeyFile: filepath.Join(dir, "k.pem")},
			"webhook w: certFile and keyFile: "},
	} {
		tt.hook.Name, tt.hook.URL, tt.hook.FailurePolicy = "w", "https://policy.example.com/review", "fail"
		_, err := New(Options{Webhooks: []config.Webhook{tt.hook}, Pushers: &Pushers{}, Log: slog.New(slog.DiscardHandler),
			Metrics: prometheus.NewRegistry()})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: New: %v, want %q", tt.name, err, tt.want)
		}
	}
}

// TestWebhookClientCertificate: a webhook that requires a client
// certificate is asked with certFile and keyFile, and cannot be asked
// without.
func TestWebhookClientCertificate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certPEM, keyPEM, clientCert := clientCertificate(t, "portcullis")
	newCertPEM, newKeyPEM, newClientCert := clientCertificate(t, "portcullis, renewed")
	certFile, keyFile, caFile := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem"), filepath.Join(dir, "ca.pem")
	pool := x509.NewCertPool()
	pool.AddCert(clientCert)
	pool.AddCert(newClientCert)
	var (
		mu   sync.Mutex
		want = "portcullis"
	)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if len(r.TLS.PeerCertificates) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != want {
			_, _ = w.Write([]byte(`{"allowed":false,"reason":"who are you"}`))
			return
		}
		_, _ = w.Write([]byte(`{"allowed":true}`))
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS12}
	srv.Config.SetKeepAlivesEnabled(false) // a new handshake for every review
	srv.StartTLS()
	t.Cleanup(srv.Close)
	for name, b := range map[string][]byte{
		certFile: certPEM, keyFile: keyPEM,
		caFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}),
	} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	hook := config.Webhook{Name: "mtls", URL: srv.URL + "/review", Timeout: config.Duration(5 * time.Second), FailurePolicy: "fail",
		CAFile: caFile, CertFile: certFile, KeyFile: keyFile}
	g := newGate(t, nil, hook)
	if err := g.AdmitTag(context.Background(), tagPush()); err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}

	// The certificate is renewed: the next connection presents the new one.
	mu.Lock()
	want = "portcullis, renewed"
	mu.Unlock()
	if err := os.WriteFile(certFile, newCertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, newKeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.AdmitTag(context.Background(), tagPush()); err != nil {
		t.Fatalf("with a renewed client certificate: %v", err)
	}

	hook.CertFile, hook.KeyFile = "", ""
	err := newGate(t, nil, hook).AdmitTag(context.Background(), tagPush())
	var ec errcode.Error
	refusal := "admission webhook mtls could not be asked: " + srv.URL + "/review could not be reached: "
	if !errors.As(err, &ec) || ec.Code != errcode.ErrorCodeDenied || !strings.HasPrefix(ec.Message, refusal) {
		t.Fatalf("without a client certificate: %v, want DENIED starting with %q", err, refusal)
	}
}

// clientCertificate returns a self-signed client certificate for the
// common name and its key, in PEM, and the parsed certificate.
func clientCertificate(t *testing.T, cn string) (certPEM, keyPEM []byte, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), cert
}
