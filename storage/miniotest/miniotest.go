// Package miniotest runs a real MinIO server for tests: a child process on
// 127.0.0.1, with its data in the test's temporary directory, that the test
// can stop and restart to inject faults, over HTTP (Start) or HTTPS (StartTLS).
//
// MinIO is AGPL: the tests run its binary and never import it. The binary is
// found through $PORTCULLIS_MINIO, then $PATH, then
// ~/.cache/portcullis-tools/bin/minio; scripts/install-tools.sh minio builds
// the pinned version there. Without it, Start fails the test: it never skips.
//
// It must not import anything of Portcullis.
package miniotest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// EnvBinary names the environment variable that overrides where the minio
// binary is.
const EnvBinary = "PORTCULLIS_MINIO"

// readyTimeout bounds how long Start and Restart wait for the server.
const readyTimeout = 60 * time.Second

// Server is a MinIO process started by Start. Its methods fail the test
// they are given on any error.
type Server struct {
	// Endpoint is the server's URL, "http://127.0.0.1:PORT". It stays the
	// same across Restart.
	Endpoint string
	// AccessKey and SecretKey are the root credentials, random per server.
	AccessKey string
	SecretKey string
	// Dir is the data directory, kept across Restart.
	Dir string
	// CAFile is the PEM certificate a server from StartTLS serves, which
	// clients must trust; "" for a plain HTTP server.
	CAFile string

	tb      testing.TB
	http    *http.Client // trusts CAFile
	bin     string
	addr    string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	buckets atomic.Int64
}

// Binary returns the path of the minio binary, or an error that says how to
// install it.
func Binary() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("$%s=%s: %w", EnvBinary, p, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	if home, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(home, ".cache", "portcullis-tools", "bin", "minio")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("minio binary not found in $%s, $PATH or ~/.cache/portcullis-tools/bin: run scripts/install-tools.sh minio", EnvBinary)
}

// Start starts a MinIO server on a free port of 127.0.0.1 with an empty data
// directory under tb.TempDir(), waits until it serves requests, and stops it
// when the test ends. It fails the test when the binary is missing.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return start(tb, false)
}

// StartTLS is Start with HTTPS: the server presents a self-signed
// certificate for 127.0.0.1, written to Server.CAFile.
func StartTLS(tb testing.TB) *Server {
	tb.Helper()
	return start(tb, true)
}

func start(tb testing.TB, useTLS bool) *Server {
	tb.Helper()
	bin, err := Binary()
	if err != nil {
		tb.Fatalf("miniotest: %v", err)
	}
	port, err := freePort()
	if err != nil {
		tb.Fatalf("miniotest: %v", err)
	}
	tmp := tb.TempDir()
	s := &Server{
		AccessKey: "portcullis-test",
		SecretKey: randomHex(20),
		Dir:       filepath.Join(tmp, "data"),
		tb:        tb,
		bin:       bin,
		addr:      net.JoinHostPort("127.0.0.1", port),
		logPath:   filepath.Join(tmp, "minio.log"),
	}
	s.Endpoint = "http://" + s.addr
	s.http = &http.Client{Timeout: time.Second}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		tb.Fatalf("miniotest: %v", err)
	}
	if useTLS {
		certs := filepath.Join(tmp, "certs")
		pool, err := writeCertificate(certs)
		if err != nil {
			tb.Fatalf("miniotest: %v", err)
		}
		s.CAFile = filepath.Join(certs, "public.crt")
		s.Endpoint = "https://" + s.addr
		s.http.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	tb.Cleanup(s.Stop)
	// The free port is free when freePort returns; another process may
	// take it before MinIO listens on it (MinIO then logs that and stays
	// up without listening): try another.
	for attempt := 1; ; attempt++ {
		err := s.launch()
		if err == nil {
			return s
		}
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			tb.Fatalf("miniotest: %v\n%s", err, s.logTail())
		}
		if port, err = freePort(); err != nil {
			tb.Fatalf("miniotest: %v", err)
		}
		s.addr = net.JoinHostPort("127.0.0.1", port)
		scheme, _, _ := strings.Cut(s.Endpoint, "//")
		s.Endpoint = scheme + "//" + s.addr
		s.logPath = filepath.Join(tmp, fmt.Sprintf("minio-%d.log", attempt+1))
	}
}

// errPortTaken is launch's error when MinIO could not listen on its
// address.
var errPortTaken = errors.New("minio's address is taken by another process")

// start starts the server on its address, or fails the test.
func (s *Server) start() {
	s.tb.Helper()
	if err := s.launch(); err != nil {
		s.tb.Fatalf("miniotest: %v\n%s", err, s.logTail())
	}
}

// launch starts the server on its address and waits until it is ready.
func (s *Server) launch() error {
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.bin, "server",
		"--address", s.addr,
		"--certs-dir", filepath.Join(filepath.Dir(s.Dir), "certs"),
		"--quiet",
		s.Dir)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+s.AccessKey,
		"MINIO_ROOT_PASSWORD="+s.SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group; killed with the test binary (a test timeout's
	// SIGQUIT, a SIGKILL) rather than left running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
	if err := s.waitReady(); err != nil {
		s.Stop()
		return err
	}
	return nil
}

// waitReady polls until the server answers a signed S3 request. MinIO's
// readiness endpoint answers 200 as soon as it listens, before its object
// layer is up; S3 requests in between get 503 XMinioServerNotInitialized.
func (s *Server) waitReady() error {
	client, err := minio.New(s.addr, &minio.Options{
		Creds:      credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Secure:     s.CAFile != "",
		Transport:  s.http.Transport,
		MaxRetries: 1,
	})
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	deadline := time.Now().Add(readyTimeout)
	var last error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, last = client.ListBuckets(ctx)
		cancel()
		if last == nil {
			return nil
		}
		if strings.Contains(s.logTail(), "address already in use") {
			return fmt.Errorf("%w: %s", errPortTaken, s.addr)
		}
		select {
		case <-s.exited:
			return fmt.Errorf("minio exited before it was ready")
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("minio not ready at %s after %s: %w", s.Endpoint, readyTimeout, last)
		}
	}
}

// Stop ends the server and waits until it has exited; the data directory
// stays. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

// Restart starts a stopped server again on the same address with the same
// data and credentials, and waits until it serves requests. It stops a
// running server first.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	s.start()
}

// Client returns a minio-go client for the server with the root credentials.
func (s *Server) Client(tb testing.TB) *minio.Client {
	tb.Helper()
	client, err := minio.New(s.addr, &minio.Options{
		Creds:     credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Secure:    s.CAFile != "",
		Transport: s.http.Transport,
	})
	if err != nil {
		tb.Fatalf("miniotest: client: %v", err)
	}
	return client
}

// CreateBucket creates a bucket with the given name.
func (s *Server) CreateBucket(tb testing.TB, name string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Client(tb).MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		tb.Fatalf("miniotest: create bucket %s: %v", name, err)
	}
}

// NewBucket creates a bucket with a name unique on this server and returns
// the name.
func (s *Server) NewBucket(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("test-%d", s.buckets.Add(1))
	s.CreateBucket(tb, name)
	return name
}

// logTail returns the end of the server's log, for failure messages.
func (s *Server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return ""
	}
	const max = 4 << 10
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(bytes.TrimSpace(b))
}

// writeCertificate writes a self-signed certificate for 127.0.0.1 and its key
// where MinIO looks for them in its certs directory, and returns a pool that
// trusts it.
func writeCertificate(dir string) (*x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "miniotest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, "public.crt"), certPEM, 0o600); err != nil {
		return nil, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(filepath.Join(dir, "private.key"), keyPEM, 0o600); err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return pool, nil
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	if err != nil {
		return "", errors.New("free port: " + err.Error())
	}
	return port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return strings.ToLower(hex.EncodeToString(b))
}
