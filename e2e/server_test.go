package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
)

func TestTLSAndHTTP2(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	dir := t.TempDir()
	certFile, keyFile := writeSelfSigned(t, dir)
	pemBytes, _ := os.ReadFile(certFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}

	reg := startRegistry(t, startOptions{
		config: fmt.Sprintf("version: 1\nhttp:\n  tls:\n    certFile: %s\n    keyFile: %s\n", certFile, keyFile),
		scheme: "https", client: client,
	})
	resp, err := client.Get("https://" + reg.Addr + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Errorf("protocol %s, want HTTP/2", resp.Proto)
	}
	// Plain HTTP to a TLS listener is refused.
	if resp, err := http.Get("http://" + reg.Addr + "/v2/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP served on the TLS port")
		}
	}
	// A real client over TLS, trusting only our CA.
	img, _ := random.Image(1024, 2)
	tarPath := filepath.Join(dir, "img.tar")
	writeTarball(t, tarPath, img)
	env := []string{"SSL_CERT_FILE=" + certFile}
	run(t, env, crane, "push", tarPath, reg.Addr+"/tls/app:v1")
	if got := strings.TrimSpace(run(t, env, crane, "digest", reg.Addr+"/tls/app:v1")); got != imageDigest(t, img) {
		t.Errorf("digest over TLS %s, want %s", got, imageDigest(t, img))
	}
}

// TestGracefulShutdown starts an upload, sends SIGTERM in the middle of it,
// and checks that the upload still completes, new connections are refused,
// and the process exits 0.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t, startOptions{config: "version: 1\nhttp:\n  shutdownGrace: 20s\n"})
	loc := reg.startUpload(t, "shutdown/app")
	data := make([]byte, 4<<20)
	_, _ = rand.Read(data)
	req, _ := http.NewRequest(http.MethodPatch, loc, nil)
	pw, result := sendPiped(t, req, int64(len(data)))
	_, _ = pw.Write(data[:1<<20])
	if err := reg.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	reg.stopped = true
	time.Sleep(500 * time.Millisecond)
	if c, err := net.DialTimeout("tcp", reg.Addr, time.Second); err == nil {
		c.Close()
		t.Error("new connections still accepted after SIGTERM")
	}
	_, _ = pw.Write(data[1<<20:])
	pw.Close()
	resp := <-result
	if resp == nil {
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != fmt.Sprintf("0-%d", len(data)-1) {
		t.Errorf("in-flight PATCH: %d Range %q, want 202 and the whole range", resp.StatusCode, resp.Header.Get("Range"))
	}
	select {
	case err := <-reg.done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, reg.Logs())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
}

// TestShutdownGraceExpires holds a request open past the grace period: the
// process still exits 0, on time.
func TestShutdownGraceExpires(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t, startOptions{config: "version: 1\nhttp:\n  shutdownGrace: 1s\n"})
	loc := reg.startUpload(t, "slow/app")
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequest(http.MethodPatch, loc, pr)
	req.ContentLength = 1 << 20
	go func() {
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	_, _ = pw.Write([]byte("partial"))
	start := time.Now()
	_ = reg.cmd.Process.Signal(syscall.SIGTERM)
	reg.stopped = true
	select {
	case err := <-reg.done:
		if err != nil {
			t.Errorf("exit: %v\n%s", err, reg.Logs())
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("exit took %v with a 1s grace period", d)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit 30s after SIGTERM with a 1s grace period")
	}
}

func TestRestartKeepsContentAndReferrers(t *testing.T) {
	t.Parallel()
	oras := tool(t, "oras")
	reg := startRegistry(t, startOptions{})
	img, _ := random.Image(2048, 2)
	if err := remote.Write(ref(t, reg.Addr+"/restart/app:v1"), img); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	writeFile(t, filepath.Join(work, "sig.txt"), "signed")
	runIn(t, work, oras, "attach", "--plain-http", "--artifact-type", "application/vnd.example.sig", reg.Addr+"/restart/app:v1", "sig.txt")
	data := reg.DataDir
	if err := reg.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}

	// A second process on the same data dir is refused while one runs.
	reg2 := startRegistry(t, startOptions{dataDir: data})
	out, err := exec.Command(registryBin, "serve", "--addr", freeAddr(t), "--data", data).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use by another process") {
		t.Errorf("second process on one data dir: %v, %s", err, out)
	}
	got, err := remote.Image(ref(t, reg2.Addr+"/restart/app:v1"))
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := got.Digest(); d.String() != imageDigest(t, img) {
		t.Errorf("after restart: %s", d)
	}
	out2 := run(t, nil, oras, "discover", "--plain-http", "--format", "json", reg2.Addr+"/restart/app:v1")
	if !strings.Contains(out2, "application/vnd.example.sig") {
		t.Errorf("referrer lost across restart: %s", out2)
	}
}

func TestCLI(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(registryBin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "portcullis ") {
		t.Errorf("version: %v %s", err, out)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yml")
	writeFile(t, good, "version: 1\nhttp:\n  addr: 127.0.0.1:5999\n")
	if out, err := exec.Command(registryBin, "config", "validate", good).CombinedOutput(); err != nil {
		t.Errorf("validate good: %v %s", err, out)
	}
	example, _ := filepath.Abs("../config.example.yml")
	if out, err := exec.Command(registryBin, "config", "validate", example).CombinedOutput(); err != nil {
		t.Errorf("validate config.example.yml: %v %s", err, out)
	}
	bad := filepath.Join(dir, "bad.yml")
	writeFile(t, bad, "version: 1\nhttp:\n  addr: nowhere\n  shutdownGrace: 5s\nlog:\n  level: chatty\n  format: xml\n")
	out, err = exec.Command(registryBin, "config", "validate", bad).CombinedOutput()
	var ee *exec.ExitError
	if !errorsAs(err, &ee) || ee.ExitCode() == 0 {
		t.Errorf("validate bad: %v", err)
	}
	for _, want := range []string{"http.addr:", "log.level:", "log.format:"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("validate bad: output lacks %q:\n%s", want, out)
		}
	}
	// The files a configuration names are read as serve reads them: every
	// missing or unusable one is named, each under its key.
	files := filepath.Join(dir, "files.yml")
	notKey := filepath.Join(dir, "not-a-key.pem")
	writeFile(t, notKey, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	writeFile(t, files, fmt.Sprintf(`version: 1
http:
  addr: 127.0.0.1:5999
  tls:
    certFile: %[1]s/missing.crt
    keyFile: %[1]s/missing.key
auth:
  enabled: true
  token:
    signingKeyFile: %[2]s
  users:
    - name: alice
      passwordFile: %[1]s/alice.pw
`, dir, notKey))
	out, err = exec.Command(registryBin, "config", "validate", files).CombinedOutput()
	if !errorsAs(err, &ee) || ee.ExitCode() == 0 {
		t.Errorf("validate with missing files: %v %s", err, out)
	}
	for _, want := range []string{"http.tls", "missing.crt", "not-a-key.pem", "alice.pw"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("validate with missing files: output lacks %q:\n%s", want, out)
		}
	}
	if out, err := exec.Command(registryBin, "config", "validate", "--skip-files", files).CombinedOutput(); err != nil {
		t.Errorf("validate --skip-files: %v %s", err, out)
	}
	typo := filepath.Join(dir, "typo.yml")
	writeFile(t, typo, "version: 1\nhtttp:\n  addr: x\n")
	if out, err := exec.Command(registryBin, "config", "validate", typo).CombinedOutput(); err == nil || !strings.Contains(string(out), "htttp") {
		t.Errorf("unknown key accepted: %v %s", err, out)
	}
	if out, err := exec.Command(registryBin, "frobnicate").CombinedOutput(); !errorsAs(err, &ee) || ee.ExitCode() != 2 {
		t.Errorf("unknown command: %v %s", err, out)
	}
}

// TestDefaults runs `registry serve` with no flags in an empty directory: it
// listens on 127.0.0.1:5000 and keeps everything under ./data.
func TestDefaults(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(registryBin, "serve")
	cmd.Dir = dir
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := <-done; err != nil {
			t.Errorf("exit: %v\n%s", err, logs.String())
		}
	}()
	var ok bool
	for i := 0; i < 200 && !ok; i++ {
		if resp, err := http.Get("http://127.0.0.1:5000/v2/"); err == nil {
			resp.Body.Close()
			ok = resp.StatusCode == 200
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !ok {
		t.Fatalf("no registry on 127.0.0.1:5000 (is the port taken?):\n%s", logs.String())
	}
	img, _ := random.Image(512, 1)
	if err := remote.Write(ref(t, "127.0.0.1:5000/defaults/app:v1"), img); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"data/portcullis.db", "data/docker/registry/v2/repositories/defaults/app"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	cfgDigest, _ := img.ConfigName()
	b, err := os.ReadFile(filepath.Join(dir, "data/docker/registry/v2/blobs/sha256", cfgDigest.Hex[:2], cfgDigest.Hex, "data"))
	if err != nil || digest.FromBytes(b).Hex() != cfgDigest.Hex {
		t.Errorf("config blob not stored under ./data: %v", err)
	}
}

func writeSelfSigned(t testing.TB, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "portcullis e2e"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})))
	return certFile, keyFile
}

// startUpload opens an upload session in repo and returns its absolute URL.
func (r *Registry) startUpload(t testing.TB, repo string) string {
	t.Helper()
	resp, err := http.Post(r.URL()+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %d", resp.StatusCode)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = r.URL() + loc
	}
	return loc
}

// sendPiped sends req with a body of size bytes written, as slowly as the
// caller likes, to the returned pipe; the response (nil when the request
// failed) arrives on the channel.
func sendPiped(t testing.TB, req *http.Request, size int64) (*io.PipeWriter, <-chan *http.Response) {
	pr, pw := io.Pipe()
	req.Body, req.ContentLength = pr, size
	req.Header.Set("Content-Type", "application/octet-stream")
	result := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("%s under way: %v", req.Method, err)
		}
		result <- resp
	}()
	return pw, result
}
