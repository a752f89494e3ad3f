package app

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/portcullis/portcullis/auth/audit"
)

// TestAuthMetricsLabels checks that audit events become counts whose
// labels come from a fixed set, whatever a client put in the event.
func TestAuthMetricsLabels(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := newAuthMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []audit.Event{
		{Kind: audit.KindAuthentication, Action: "login", Result: audit.ResultSuccess},
		{Kind: audit.KindAuthentication, Action: "login", Result: audit.ResultFailure},
		{Kind: audit.KindAuthentication, Action: "login", Result: audit.ResultLocked},
		{Kind: audit.KindAuthentication, Action: "refresh", Result: audit.ResultFailure},
		{Kind: audit.KindDecision, Action: "push", Result: audit.ResultDenied},
		{Kind: audit.KindDecision, Action: "push", Result: audit.ResultAllowed},
		{Kind: audit.KindDecision, Action: "made-up-by-a-client", Result: audit.ResultDenied},
		{Kind: audit.KindWrite, Action: "push", Result: audit.ResultDenied, Rule: "releases"},
	} {
		m.observe(e)
	}
	for action, want := range map[string]float64{"push": 2, "other": 1, "pull": 0} {
		if n := testutil.ToFloat64(m.denials.WithLabelValues(action)); n != want {
			t.Errorf("denials of %s: %v, want %v", action, n, want)
		}
	}
	if n := testutil.CollectAndCount(m.denials); n != len(denialActions) {
		t.Errorf("%d denial series, want %d: a label value came from an event", n, len(denialActions))
	}
	if n := testutil.ToFloat64(m.logins.WithLabelValues("login", "locked")); n != 1 {
		t.Errorf("lockouts %v, want 1", n)
	}
	if n := testutil.ToFloat64(m.logins.WithLabelValues("refresh", "failure")); n != 1 {
		t.Errorf("refresh failures %v, want 1", n)
	}
}

// TestCertExpiry checks that the certificate's expiry is read from the
// file at each scrape, so a renewed certificate shows.
func TestCertExpiry(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "cert.pem")
	write := func(notAfter time.Time) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "registry"},
			NotBefore: notAfter.Add(-time.Hour), NotAfter: notAfter}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	first := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	write(first)
	c := newCertExpiry(func() string { return file })
	if got := testutil.ToFloat64(c); got != float64(first.Unix()) {
		t.Errorf("expiry %v, want %v", got, first.Unix())
	}
	renewed := first.Add(90 * 24 * time.Hour)
	write(renewed)
	if got := testutil.ToFloat64(c); got != float64(renewed.Unix()) {
		t.Errorf("expiry after renewal %v, want %v", got, renewed.Unix())
	}
}

// TestScrapeOutlivesAFailedCollector: a series that cannot be read (the
// certificate file gone, the robot listing failed) is left out of the
// exposition; every other series is still served.
func TestScrapeOutlivesAFailedCollector(t *testing.T) {
	t.Parallel()
	var logged strings.Builder
	a := &App{metrics: prometheus.NewRegistry(), log: slog.New(slog.NewTextHandler(&logged, nil))}
	reloads := prometheus.NewCounter(prometheus.CounterOpts{Name: "portcullis_test_reloads_total", Help: "A series that reads."})
	reloads.Inc()
	a.metrics.MustRegister(reloads, newCertExpiry(func() string { return filepath.Join(t.TempDir(), "gone.pem") }))
	srv := httptest.NewServer(a.metricsHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "portcullis_test_reloads_total 1") {
		t.Errorf("scrape with the certificate file gone: %s\n%s", resp.Status, body)
	}
	if strings.Contains(string(body), "portcullis_tls_certificate_expiry_timestamp_seconds ") {
		t.Errorf("an expiry was served for a certificate file that is gone:\n%s", body)
	}
	if !strings.Contains(logged.String(), "http.tls.certFile") {
		t.Errorf("the series left out was not logged: %q", logged.String())
	}
}
