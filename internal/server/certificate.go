package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// KeyPair is a TLS certificate and key read from their files.
type KeyPair struct {
	CertFile, KeyFile string
	sum               [sha256.Size]byte // of both files' contents
	cert              *tls.Certificate
}

// LoadKeyPair reads and parses a PEM certificate (chain) and its key. It
// returns an error naming the file that cannot be read, or saying that the
// pair does not parse or match.
func LoadKeyPair(certFile, keyFile string) (*KeyPair, error) {
	certPEM, keyPEM, sum, err := readPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return parsePair(certFile, keyFile, certPEM, keyPEM, sum)
}

func readPair(certFile, keyFile string) (certPEM, keyPEM []byte, sum [sha256.Size]byte, err error) {
	if certPEM, err = os.ReadFile(certFile); err != nil {
		return nil, nil, sum, fmt.Errorf("http.tls.certFile: %w", err)
	}
	if keyPEM, err = os.ReadFile(keyFile); err != nil {
		return nil, nil, sum, fmt.Errorf("http.tls.keyFile: %w", err)
	}
	h := sha256.New()
	h.Write(certPEM)
	h.Write([]byte{0})
	h.Write(keyPEM)
	copy(sum[:], h.Sum(nil))
	return certPEM, keyPEM, sum, nil
}

func parsePair(certFile, keyFile string, certPEM, keyPEM []byte, sum [sha256.Size]byte) (*KeyPair, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The error of X509KeyPair never quotes the key.
		return nil, fmt.Errorf("http.tls: %s and %s: %w", certFile, keyFile, err)
	}
	return &KeyPair{CertFile: certFile, KeyFile: keyFile, sum: sum, cert: &cert}, nil
}

// Certificate serves the newest key pair that loaded: the one set by the
// last configuration, or a newer one read from the same files when they
// changed (a renewal by cert-manager replaces the files in place). It is
// safe for concurrent use.
type Certificate struct {
	cur atomic.Pointer[KeyPair]
	log *slog.Logger
	// problem is why the files last failed to load, so that one broken
	// renewal is logged once, not on every tick.
	mu      sync.Mutex
	problem string
}

// NewCertificate returns a Certificate serving p, logging reloads to log.
func NewCertificate(p *KeyPair, log *slog.Logger) *Certificate {
	c := &Certificate{log: log}
	c.cur.Store(p)
	return c
}

// Set serves p from now on.
func (c *Certificate) Set(p *KeyPair) { c.cur.Store(p) }

// GetCertificate implements tls.Config.GetCertificate.
func (c *Certificate) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load().cert, nil
}

// Refresh reads the current pair's files once and serves them when they
// changed and load. It reports whether it served a new pair.
func (c *Certificate) Refresh(ctx context.Context) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.cur.Load()
	certPEM, keyPEM, sum, err := readPair(old.CertFile, old.KeyFile)
	if err == nil && sum == old.sum {
		return false
	}
	var p *KeyPair
	if err == nil {
		p, err = parsePair(old.CertFile, old.KeyFile, certPEM, keyPEM, sum)
	}
	if err != nil {
		// A renewal may replace one file before the other: a pair that
		// does not load is retried on the next tick, and logged once.
		if err.Error() != c.problem {
			c.problem = err.Error()
			c.log.WarnContext(ctx, "tls certificate files changed but do not load; serving the previous certificate", "err", err)
		}
		return false
	}
	if !c.cur.CompareAndSwap(old, p) {
		return false // a reload set another pair meanwhile
	}
	c.problem = ""
	attrs := []any{"cert_file", p.CertFile}
	if leaf := p.cert.Leaf; leaf != nil {
		attrs = append(attrs, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	c.log.InfoContext(ctx, "tls certificate reloaded", attrs...)
	return true
}
