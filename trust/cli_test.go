package trust_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	gcrv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/internal/testenv"
)

// cosignPassword protects the test's cosign private keys.
const cosignPassword = "portcullis-test"

// tool finds a signing CLI on PATH or in the install-tools.sh cache. A
// missing tool fails the test: the signature tests are the point.
func tool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	root := os.Getenv("PORTCULLIS_TOOLS")
	if root == "" {
		home, _ := os.UserHomeDir()
		root = filepath.Join(home, ".cache", "portcullis-tools")
	}
	p := filepath.Join(root, "bin", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s not found on PATH or in %s: run scripts/install-tools.sh cosign notation", name, filepath.Dir(p))
	}
	return p
}

// signEnv is a registry plus the signing CLIs, each run with its own HOME.
type signEnv struct {
	reg      *testenv.Registry
	c        *httpContent
	dir      string
	cosign   string
	notation string
}

func newSignEnv(t testing.TB) *signEnv {
	t.Helper()
	e := &signEnv{cosign: tool(t, "cosign"), notation: tool(t, "notation"), dir: t.TempDir()}
	e.reg = testenv.Start(t, nil)
	e.c = &httpContent{base: e.reg.URL}
	return e
}

// run runs a CLI in dir with HOME and XDG_CONFIG_HOME under home.
func (e *signEnv) run(t testing.TB, home, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = e.dir
	cmd.Env = append(os.Environ(),
		"HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"COSIGN_PASSWORD="+cosignPassword,
		"COSIGN_YES=true",
		"COSIGN_EXPERIMENTAL=0",
		"TUF_ROOT="+filepath.Join(home, ".sigstore"),
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// home returns a fresh home directory for one CLI identity.
func (e *signEnv) home(t testing.TB, name string) string {
	t.Helper()
	h := filepath.Join(e.dir, "home-"+name)
	if err := os.MkdirAll(filepath.Join(h, ".config"), 0o700); err != nil {
		t.Fatal(err)
	}
	return h
}

// ref is HOST/repo@digest.
func (e *signEnv) ref(repo string, d digest.Digest) string {
	return e.reg.Host + "/" + repo + "@" + d.String()
}

// pushImage pushes a random image to repo and returns its digest.
func (e *signEnv) pushImage(t testing.TB, repo string) digest.Digest {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	return e.write(t, repo, img)
}

func (e *signEnv) write(t testing.TB, repo string, img gcrv1.Image) digest.Digest {
	t.Helper()
	h, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(e.reg.Host+"/"+repo+"@"+h.String(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	return digest.Digest(h.String())
}

// pushIndex pushes a random index of n images and returns its digest and
// its children's.
func (e *signEnv) pushIndex(t testing.TB, repo string, n int) (digest.Digest, []digest.Digest) {
	t.Helper()
	idx, err := random.Index(256, 1, int64(n))
	if err != nil {
		t.Fatal(err)
	}
	h, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(e.reg.Host+"/"+repo+"@"+h.String(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var children []digest.Digest
	for _, c := range m.Manifests {
		children = append(children, digest.Digest(c.Digest.String()))
	}
	return digest.Digest(h.String()), children
}

// cosignKey is a cosign key pair on disk.
type cosignKey struct{ priv, pub string }

// cosignGenerate makes a P-256 key pair with cosign generate-key-pair.
func (e *signEnv) cosignGenerate(t testing.TB, prefix string) cosignKey {
	t.Helper()
	e.run(t, e.home(t, "cosign"), e.cosign, "generate-key-pair", "--output-key-prefix", prefix)
	return cosignKey{filepath.Join(e.dir, prefix+".key"), filepath.Join(e.dir, prefix+".pub")}
}

// cosignImport imports a PKCS#8 private key (Ed25519 or RSA) made here.
func (e *signEnv) cosignImport(t testing.TB, prefix string, key any) cosignKey {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pemFile := filepath.Join(e.dir, prefix+"-pkcs8.pem")
	if err := os.WriteFile(pemFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	e.run(t, e.home(t, "cosign"), e.cosign, "import-key-pair", "--key", pemFile, "--output-key-prefix", prefix)
	return cosignKey{filepath.Join(e.dir, prefix+".key"), filepath.Join(e.dir, prefix+".pub")}
}

// cosignSign signs HOST/repo@d offline: no transparency log, no signing
// config fetched from the internet. bundle chooses the OCI-referrer bundle
// (cosign 3's default) or the legacy .sig tag.
func (e *signEnv) cosignSign(t testing.TB, k cosignKey, repo string, d digest.Digest, bundle bool, extra ...string) {
	t.Helper()
	args := []string{"sign", "--key", k.priv, "--tlog-upload=false", "--use-signing-config=false",
		"--allow-http-registry", "-y"}
	if !bundle {
		args = append(args, "--new-bundle-format=false")
	}
	args = append(args, extra...)
	e.run(t, e.home(t, "cosign"), e.cosign, append(args, e.ref(repo, d))...)
}

// notationIdentity is a notation configuration with one default signing
// key, and the PEM file of the certificate to trust for it.
type notationIdentity struct {
	home     string
	trustPEM string // the root (or self-signed) certificate
	subject  string // the signing certificate's subject, as notation prints it
}

// notationTest makes a notation identity with notation cert generate-test
// (a self-signed RSA certificate valid for a year).
func (e *signEnv) notationTest(t testing.TB, name string) notationIdentity {
	t.Helper()
	home := e.home(t, "notation-"+name)
	e.run(t, home, e.notation, "cert", "generate-test", "--default", name)
	crt := filepath.Join(home, ".config", "notation", "localkeys", name+".crt")
	if _, err := os.Stat(crt); err != nil {
		t.Fatalf("generate-test wrote no certificate: %v", err)
	}
	return notationIdentity{home: home, trustPEM: crt, subject: "C=US, ST=WA, L=Seattle, O=Notary, CN=" + name}
}

// notationChain makes a notation identity from a CA and a leaf certificate
// made here, the leaf valid from notBefore to notAfter.
func (e *signEnv) notationChain(t testing.TB, name string, notBefore, notAfter time.Time) notationIdentity {
	t.Helper()
	home := e.home(t, "notation-"+name)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"Portcullis Test"}, CommonName: name + " root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(2),
		Subject:               pkix.Name{Country: []string{"US"}, Organization: []string{"Portcullis Test"}, CommonName: name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(home, "keys")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	keyPath, certPath, rootPath := filepath.Join(dir, name+".key"), filepath.Join(dir, name+".crt"), filepath.Join(dir, name+"-root.crt")
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})...)
	for path, data := range map[string][]byte{
		keyPath:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		certPath: chain,
		rootPath: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	keys, _ := json.Marshal(map[string]any{
		"default": name,
		"keys":    []map[string]string{{"name": name, "keyPath": keyPath, "certPath": certPath}},
	})
	cfgDir := filepath.Join(home, ".config", "notation")
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "signingkeys.json"), keys, 0o600); err != nil {
		t.Fatal(err)
	}
	return notationIdentity{home: home, trustPEM: rootPath, subject: "C=US, O=Portcullis Test, CN=" + name}
}

// notationSign signs HOST/repo@d with the identity's default key.
func (e *signEnv) notationSign(t testing.TB, id notationIdentity, repo string, d digest.Digest, extra ...string) {
	t.Helper()
	args := append([]string{"sign", "--insecure-registry"}, extra...)
	e.run(t, id.home, e.notation, append(args, e.ref(repo, d))...)
}

// newKeys returns an Ed25519 and an RSA-3072 private key.
func newKeys(t testing.TB) (ed25519.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	return ed, rk
}
