package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writePair writes a new self-signed certificate and key to the files and
// returns the certificate's DER.
func writePair(t *testing.T, certFile, keyFile string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return der
}

// TestCertificateRefresh: unchanged files keep the pair; a renewal is
// served; a renewal that does not load (one file written before the
// other) keeps the previous pair until both match; a pair set by a reload
// is served and refreshed from its own files.
func TestCertificateRefresh(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	served := func(c *Certificate) []byte {
		t.Helper()
		cert, err := c.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return cert.Certificate[0]
	}
	first := writePair(t, certFile, keyFile)
	p, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	c := NewCertificate(p, slog.New(slog.NewJSONHandler(&logs, nil)))
	ctx := context.Background()
	if c.Refresh(ctx) || !bytes.Equal(served(c), first) {
		t.Fatal("unchanged files: refreshed, or another certificate served")
	}

	second := writePair(t, certFile, keyFile)
	if !c.Refresh(ctx) || !bytes.Equal(served(c), second) {
		t.Fatal("renewed files are not served")
	}

	// The certificate written, the key not yet: a mismatch.
	keyPEM, _ := os.ReadFile(keyFile)
	writePair(t, certFile, keyFile)
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if c.Refresh(ctx) || c.Refresh(ctx) || !bytes.Equal(served(c), second) {
		t.Fatal("a half-written renewal replaced the served certificate")
	}
	if n := bytes.Count(logs.Bytes(), []byte("do not load")); n != 1 {
		t.Errorf("a renewal that does not load was logged %d times, want once", n)
	}
	fourth := writePair(t, certFile, keyFile)
	if !c.Refresh(ctx) || !bytes.Equal(served(c), fourth) {
		t.Fatal("the completed renewal is not served")
	}

	otherCert, otherKey := filepath.Join(dir, "other.crt"), filepath.Join(dir, "other.key")
	other := writePair(t, otherCert, otherKey)
	op, err := LoadKeyPair(otherCert, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	c.Set(op)
	if !bytes.Equal(served(c), other) {
		t.Fatal("the pair set is not served")
	}
	renewed := writePair(t, otherCert, otherKey)
	if !c.Refresh(ctx) || !bytes.Equal(served(c), renewed) {
		t.Fatal("the set pair's files are not refreshed")
	}

	if _, err := LoadKeyPair(filepath.Join(dir, "missing.crt"), keyFile); err == nil {
		t.Error("LoadKeyPair of a missing file succeeded")
	}
}
