package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// TestHA proves that several replicas over one bucket act as one registry.
// Three containers of the image scripts/image.sh builds run on a private
// Docker network over one MinIO (a container of the pinned static binary
// on the same network), sharing the upload secret, the token keys and the
// bucket (robots, referrers, verdicts, scan reports, the vulnerability
// database), behind a round-robin proxy in the test (haProxy). Real clients
// (go-containerregistry, crane, docker, cosign) go through the proxy; the
// checks of what each replica answers talk to each replica directly.
func TestHA(t *testing.T) {
	t.Parallel()
	c := haStart(t)
	alice := remote.WithAuth(&authn.Basic{Username: "alice", Password: "alice-pw"})

	t.Run("chunked upload across replicas", func(t *testing.T) { haChunkedUpload(t, c, alice) })
	t.Run("docker through the proxy", func(t *testing.T) { haDocker(t, c) })
	t.Run("tokens and robots on every replica", func(t *testing.T) { haTokensAndRobots(t, c, alice) })
	t.Run("trust and scans agree", func(t *testing.T) { haTrustAndScans(t, c, alice) })
	t.Run("deletes seen at once", func(t *testing.T) { haDeletes(t, c, alice) })
	t.Run("rolling restart under load", func(t *testing.T) {
		load := haStartLoad(t, c)
		c.rollingRestart(t)
		load.stop(t)
	})
	t.Run("kill mid-push", func(t *testing.T) { haKillMidPush(t, c, alice) })
	t.Run("token key rotation", func(t *testing.T) { haKeyRotation(t, c) })
}

// haReplicas is how many registries run.
const haReplicas = 3

// haCluster is the running deployment.
type haCluster struct {
	docker, crane string
	image         string // the registry image
	network       string
	dir           string // configuration and secrets, mounted at the same path in the containers
	hostData      string // --data of the CLI on this host
	minioAddr     string // host:port of MinIO on the network, reachable from this host too
	names         []string
	proxy         *haProxy
	addr          string   // the proxy: what clients use
	pinned        []string // loopback addresses that each reach one replica
	aliceEnv      []string
	signing       string   // the token signing key file in use
	verification  []string // the further verification key files in use
	cosignKey     string
	cosign        string
}

// haStart builds the image, starts MinIO, the replicas and the proxy.
func haStart(t *testing.T) *haCluster {
	t.Helper()
	c := &haCluster{docker: tool(t, "docker"), crane: tool(t, "crane")}
	if out, err := runErr(nil, c.docker, "info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Fatalf("docker engine not answering: %v\n%s", err, out)
	}
	suffix := fmt.Sprintf("%d", time.Now().UnixNano())
	c.image = haBuildImage(t, c.docker, "portcullis:e2e-ha-"+suffix)

	c.network = "portcullis-ha-" + suffix
	run(t, nil, c.docker, "network", "create", c.network)
	t.Cleanup(func() { _, _ = runErr(nil, c.docker, "network", "rm", c.network) })

	minioAddr, accessKey, secretKey := haStartMinIO(t, c, suffix)
	c.minioAddr = minioAddr

	// Configuration and secrets, readable by the registry's user.
	c.dir = t.TempDir()
	c.hostData = t.TempDir()
	secrets := filepath.Join(c.dir, "secrets")
	if err := os.Mkdir(secrets, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(c.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	upload := make([]byte, 24)
	_, _ = rand.Read(upload)
	writeFile(t, filepath.Join(secrets, "upload-secret"), hex.EncodeToString(upload))
	writeFile(t, filepath.Join(secrets, "s3-access-key"), accessKey)
	writeFile(t, filepath.Join(secrets, "s3-secret-key"), secretKey)
	writeFile(t, filepath.Join(secrets, "alice"), "alice-pw")
	writeFile(t, filepath.Join(secrets, "bob"), "bob-pw")
	for _, k := range []string{"token-1.pem", "token-2.pem"} {
		run(t, nil, registryBin, "auth", "keygen", filepath.Join(secrets, k))
	}
	c.cosign = tool(t, "cosign")
	runIn(t, secrets, c.cosign, "generate-key-pair")
	c.cosignKey = filepath.Join(secrets, "cosign.key")
	if err := os.Chmod(secrets, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(secrets)
	for _, e := range entries {
		if err := os.Chmod(filepath.Join(secrets, e.Name()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c.signing = "token-1.pem"

	// The proxy listens first: its address is the token realm.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = ln.Addr().String()
	c.proxy = haNewProxy(haReplicas)
	srv := &http.Server{Handler: c.proxy, ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	ctx, cancel := context.WithCancel(context.Background())
	go c.proxy.check(ctx)
	t.Cleanup(func() {
		cancel()
		_ = srv.Close()
		t.Logf("proxy: %d requests sent to another replica after a failure", c.proxy.retries.Load())
	})

	c.writeConfig(t)
	for i := range haReplicas {
		name := fmt.Sprintf("portcullis-ha-%s-%c", suffix, 'a'+i)
		c.names = append(c.names, name)
		run(t, nil, c.docker, "run", "-d", "--name", name, "--network", c.network,
			"--read-only", "--tmpfs", "/tmp", "-v", c.dir+":"+c.dir+":ro",
			c.image, "serve", "--config", filepath.Join(c.dir, "config.yml"), "--addr", ":5000", "--data", "/data")
		t.Cleanup(func() {
			if t.Failed() {
				logs, _ := exec.Command(c.docker, "logs", "--tail", "20", name).CombinedOutput()
				t.Logf("replica %c, last log lines:\n%s", 'a'+i, logs)
			}
			_, _ = runErr(nil, c.docker, "rm", "-f", "-v", name)
		})
	}
	for i := range haReplicas {
		c.waitReplica(t, i)
		c.pinned = append(c.pinned, c.pin(t, i))
	}
	c.aliceEnv = []string{"DOCKER_CONFIG=" + t.TempDir()}
	run(t, c.aliceEnv, c.crane, "auth", "login", "--insecure", c.addr, "-u", "alice", "-p", "alice-pw")
	return c
}

// haBuildImage builds the registry image with scripts/image.sh once for
// the test run and removes it at the end.
func haBuildImage(t *testing.T, docker, tag string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "scripts/image.sh", tag)
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("scripts/image.sh: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = runErr(nil, docker, "rmi", "-f", tag) })
	return tag
}

// haStartMinIO runs the pinned MinIO binary (static) as a container of an
// image made FROM scratch here, with its data on a host directory, creates
// the bucket and returns MinIO's address on the network.
func haStartMinIO(t *testing.T, c *haCluster, suffix string) (addr, accessKey, secretKey string) {
	t.Helper()
	bin := tool(t, "minio")
	ctxDir := t.TempDir()
	src, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := os.OpenFile(filepath.Join(ctxDir, "minio"), os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	src.Close()
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(ctxDir, "Dockerfile"), "FROM scratch\nCOPY minio /minio\nENTRYPOINT [\"/minio\"]\n")
	image := "portcullis-ha-minio:" + suffix
	run(t, []string{"DOCKER_BUILDKIT=0"}, c.docker, "build", "--quiet", "--tag", image, ctxDir)
	t.Cleanup(func() { _, _ = runErr(nil, c.docker, "rmi", "-f", image) })

	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	access, secretKey := "portcullis-ha", hex.EncodeToString(secret)
	name := "portcullis-ha-minio-" + suffix
	run(t, nil, c.docker, "run", "-d", "--name", name, "--network", c.network,
		"-v", t.TempDir()+":/data",
		"-e", "MINIO_ROOT_USER="+access, "-e", "MINIO_ROOT_PASSWORD="+secretKey,
		"-e", "MINIO_BROWSER=off", "-e", "MINIO_UPDATE=off",
		image, "server", "--address", ":9000", "--certs-dir", "/data/.certs", "--quiet", "/data")
	t.Cleanup(func() { _, _ = runErr(nil, c.docker, "rm", "-f", "-v", name) })
	addr = net.JoinHostPort(c.containerIP(t, name), "9000")

	client, err := minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4(access, secretKey, ""), MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	var mkErr error
	if !eventually(60*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		mkErr = client.MakeBucket(ctx, "portcullis", minio.MakeBucketOptions{})
		return mkErr == nil
	}) {
		logs, _ := exec.Command(c.docker, "logs", name).CombinedOutput()
		t.Fatalf("MinIO: no bucket within 60s: %v\n%s", mkErr, logs)
	}
	return addr, access, secretKey
}

// containerIP returns a container's address on the cluster's network.
func (c *haCluster) containerIP(t *testing.T, name string) string {
	t.Helper()
	ip := strings.TrimSpace(run(t, nil, c.docker, "inspect", "--format",
		fmt.Sprintf("{{(index .NetworkSettings.Networks %q).IPAddress}}", c.network), name))
	if net.ParseIP(ip) == nil {
		t.Fatalf("container %s has no address on %s: %q", name, c.network, ip)
	}
	return ip
}

// writeConfig writes the configuration every replica reads, with the
// current token keys. The CLI on this host reads the same file.
func (c *haCluster) writeConfig(t *testing.T) {
	t.Helper()
	s := filepath.Join(c.dir, "secrets")
	var verify []string
	for _, k := range c.verification {
		verify = append(verify, filepath.Join(s, k))
	}
	cfg := fmt.Sprintf(`version: 1
dataDir: /data
http:
  addr: ":5000"
  secretFile: %[1]s/upload-secret
  shutdownGrace: 20s
  # Every client arrives from the proxy's address.
  maxConnsPerAddress: 0
storage:
  s3:
    endpoint: http://%[2]s
    region: us-east-1
    bucket: portcullis
    accessKeyFile: %[1]s/s3-access-key
    secretKeyFile: %[1]s/s3-secret-key
auth:
  enabled: true
  token:
    realm: http://%[3]s/token
    signingKeyFile: %[1]s/%[4]s
    verificationKeyFiles: [%[5]s]
  users:
    - name: alice
      passwordFile: %[1]s/alice
    - name: bob
      passwordFile: %[1]s/bob
  catalog: [user:alice]
  rules:
    - name: alice-all
      subjects: [user:alice]
      repositories: ["**"]
      actions: [pull, push, delete]
    - name: bob-pulls
      subjects: [user:bob]
      repositories: ["**"]
      actions: [pull]
    - name: robots
      subjects: ["robot:*"]
      repositories: ["team/**"]
      actions: [pull, push]
trust:
  keys:
    - name: ci
      file: %[1]s/cosign.pub
  policies:
    - name: guarded
      repositories: ["guarded/**"]
      mode: quarantine
      signers: [ci]
`, s, c.minioAddr, c.addr, c.signing, strings.Join(verify, ", "))
	writeFile(t, filepath.Join(c.dir, "config.yml"), cfg)
}

// replica returns replica i's address, as the proxy reaches it.
func (c *haCluster) replica(i int) string {
	c.proxy.mu.Lock()
	defer c.proxy.mu.Unlock()
	return c.proxy.backends[i]
}

// pin returns a loopback address that forwards to replica i alone, the
// token realm included. Clients of go-containerregistry reach a replica
// through it: they refuse a token realm on another host than the
// registry's, unless it is public.
func (c *haCluster) pin(t *testing.T, i int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host = "http", c.replica(i)
			r.Out.Host = r.In.Host
		},
		// The token realm is the replica's own /token, through here.
		ModifyResponse: func(resp *http.Response) error {
			if h := resp.Header.Get("WWW-Authenticate"); h != "" {
				resp.Header.Set("WWW-Authenticate", strings.Replace(h, "http://"+c.addr+"/token", "http://"+addr+"/token", 1))
			}
			return nil
		},
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return addr
}

// waitReplica waits until replica i (just started) is ready and in the
// proxy's rotation.
func (c *haCluster) waitReplica(t *testing.T, i int) {
	t.Helper()
	addr := net.JoinHostPort(c.containerIP(t, c.names[i]), "5000")
	c.proxy.set(i, addr)
	if !eventually(60*time.Second, func() bool { return c.proxy.isHealthy(i) }) {
		logs, _ := exec.Command(c.docker, "logs", c.names[i]).CombinedOutput()
		t.Fatalf("replica %c not ready within 60s:\n%s", 'a'+i, logs)
	}
}

// rollingRestart stops each replica with SIGTERM (docker stop), which must
// exit 0 after finishing its in-flight requests, starts it again and waits
// until it is ready before going on to the next.
func (c *haCluster) rollingRestart(t *testing.T) {
	t.Helper()
	for i, name := range c.names {
		since := time.Now().Add(-time.Second).UTC().Format(time.RFC3339)
		run(t, nil, c.docker, "stop", "--time", "30", name)
		if code := strings.TrimSpace(run(t, nil, c.docker, "inspect", "--format", "{{.State.ExitCode}}", name)); code != "0" {
			logs, _ := exec.Command(c.docker, "logs", "--since", since, name).CombinedOutput()
			t.Errorf("replica %c exited %s after SIGTERM (sent %s); its log since:\n%s", 'a'+i, code, since, logs)
		}
		run(t, nil, c.docker, "start", name)
		c.waitReplica(t, i)
	}
}

// haDo sends one request to a registry with a bearer token and returns the
// status and body.
func haDo(t *testing.T, method, addr, path, token string, body io.Reader, header ...string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, addr, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

// haChunkedUpload: one blob uploaded in two PATCH chunks whose POST, PATCH,
// PATCH and PUT each go to another replica, and images pushed by
// go-containerregistry through the proxy (POST, PATCH and PUT in turn).
func haChunkedUpload(t *testing.T, c *haCluster, alice remote.Option) {
	tok, code := tryBearer(t, "http://"+c.replica(0), "alice", "alice-pw", "repository:team/chunked:pull,push")
	if tok == "" {
		t.Fatalf("token: %d", code)
	}
	blob := make([]byte, 3<<20)
	_, _ = rand.Read(blob)
	dgst := v1.Hash{Algorithm: "sha256", Hex: haSHA256(blob)}
	code, body, h := haDo(t, http.MethodPost, c.replica(0), "/v2/team/chunked/blobs/uploads/", tok, nil)
	if code != http.StatusAccepted {
		t.Fatalf("POST on replica a: %d %s", code, body)
	}
	loc := h.Get("Location")
	half := len(blob) / 2
	for i, part := range []struct{ from, to int }{{0, half}, {half, len(blob)}} {
		u := haPath(t, loc)
		code, body, h = haDo(t, http.MethodPatch, c.replica(i+1), u, tok, bytes.NewReader(blob[part.from:part.to]),
			"Content-Type", "application/octet-stream", "Content-Range", fmt.Sprintf("%d-%d", part.from, part.to-1))
		if code != http.StatusAccepted {
			t.Fatalf("PATCH chunk %d on replica %c: %d %s", i+1, 'b'+i, code, body)
		}
		loc = h.Get("Location")
	}
	u := haPath(t, loc)
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	code, body, _ = haDo(t, http.MethodPut, c.replica(0), u+sep+"digest="+dgst.String(), tok, nil)
	if code != http.StatusCreated {
		t.Fatalf("PUT on replica a: %d %s", code, body)
	}
	for i := range haReplicas {
		code, got, _ := haDo(t, http.MethodGet, c.replica(i), "/v2/team/chunked/blobs/"+dgst.String(), tok, nil)
		if code != http.StatusOK || !bytes.Equal(got, blob) {
			t.Errorf("replica %c serves the blob with %d, %d bytes (want %d)", 'a'+i, code, len(got), len(blob))
		}
	}

	// go-containerregistry through the proxy: each blob's PATCH and PUT
	// land on different replicas.
	c.proxy.takeHops()
	img := c.pushRandom(t, "team/chunked:ggcr", 1<<20, 4, alice)
	uploads := map[string][]int{} // upload path -> replicas of its PATCH and PUT
	for _, hop := range c.proxy.takeHops() {
		if strings.Contains(hop.path, "/blobs/uploads/") && (hop.method == http.MethodPatch || hop.method == http.MethodPut) {
			uploads[hop.path] = append(uploads[hop.path], hop.replica)
		}
	}
	spread := 0
	for _, rs := range uploads {
		if len(rs) == 2 && rs[0] != rs[1] {
			spread++
		}
	}
	if spread == 0 {
		t.Errorf("no upload had its PATCH and PUT on different replicas: %v", uploads)
	}
	t.Logf("%d of %d uploads had PATCH and PUT on different replicas", spread, len(uploads))
	want := imageDigest(t, img)
	for i := range haReplicas {
		if got := c.readWhole(t, i, "team/chunked:ggcr", alice); got != want {
			t.Errorf("replica %c serves %s, pushed %s", 'a'+i, got, want)
		}
	}
}

// pushRandom pushes a random image through the proxy with
// go-containerregistry.
func (c *haCluster) pushRandom(t *testing.T, repoTag string, size int64, layers int64, auth remote.Option) v1.Image {
	t.Helper()
	img, err := random.Image(size, layers)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref(t, c.addr+"/"+repoTag), img, auth); err != nil {
		t.Fatalf("push %s through the proxy: %v", repoTag, err)
	}
	return img
}

// readWhole reads an image whole (manifest, config, layers, each checked
// against its digest) from replica i and returns its digest.
func (c *haCluster) readWhole(t *testing.T, i int, repoTag string, auth remote.Option) string {
	t.Helper()
	img, err := remote.Image(ref(t, c.pinned[i]+"/"+repoTag), auth)
	if err != nil {
		t.Fatalf("replica %c: %v", 'a'+i, err)
	}
	if err := validate.Image(img); err != nil {
		t.Errorf("replica %c serves a broken image: %v", 'a'+i, err)
	}
	return imageDigest(t, img)
}

// haPath returns the path and query of an upload Location (absolute or
// relative).
func haPath(t *testing.T, loc string) string {
	t.Helper()
	if i := strings.Index(loc, "/v2/"); i >= 0 {
		return loc[i:]
	}
	t.Fatalf("upload location %q", loc)
	return ""
}

// haDocker pushes the registry's own image with the docker client
// through the proxy, pulls it back, and reads it whole from every replica.
func haDocker(t *testing.T, c *haCluster) {
	env := []string{"DOCKER_CONFIG=" + t.TempDir()}
	run(t, env, c.docker, "login", "-u", "alice", "-p", "alice-pw", c.addr)
	target := c.addr + "/team/docker:v1"
	run(t, nil, c.docker, "tag", c.image, target)
	t.Cleanup(func() { _, _ = runErr(nil, c.docker, "rmi", "-f", target) })
	run(t, env, c.docker, "push", target)
	run(t, nil, c.docker, "rmi", target)
	run(t, env, c.docker, "pull", target)
	repoDigests := run(t, nil, c.docker, "image", "inspect", "--format", "{{json .RepoDigests}}", target)
	alice := remote.WithAuth(&authn.Basic{Username: "alice", Password: "alice-pw"})
	for i := range haReplicas {
		if d := c.readWhole(t, i, "team/docker:v1", alice); !strings.Contains(repoDigests, d) {
			t.Errorf("replica %c serves %s, docker pulled %s", 'a'+i, d, repoDigests)
		}
	}
}

func haSHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// haTokensAndRobots: a token issued by any replica is accepted by every
// other; a robot created with the CLI in the bucket logs in on every
// replica, and once revoked on none.
func haTokensAndRobots(t *testing.T, c *haCluster, alice remote.Option) {
	c.pushRandom(t, "team/tok:v1", 1024, 1, alice)
	accept := "application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json"
	for from := range haReplicas {
		tok, code := tryBearer(t, "http://"+c.replica(from), "alice", "alice-pw", "repository:team/tok:pull")
		if tok == "" {
			t.Fatalf("token from replica %c: %d", 'a'+from, code)
		}
		for on := range haReplicas {
			if code, body, _ := haDo(t, http.MethodGet, c.replica(on), "/v2/team/tok/manifests/v1", tok, nil, "Accept", accept); code != http.StatusOK {
				t.Errorf("a token from replica %c on replica %c: %d %s", 'a'+from, 'a'+on, code, body)
			}
		}
	}
	// The check can fail: a token no replica signed is refused.
	forged := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256","kid":"none"}`)) + ".e30.c2ln"
	for on := range haReplicas {
		if code, _, _ := haDo(t, http.MethodGet, c.replica(on), "/v2/team/tok/manifests/v1", forged, nil); code != http.StatusUnauthorized {
			t.Errorf("a forged token on replica %c: %d", 'a'+on, code)
		}
	}

	out := run(t, nil, registryBin, "robot", "create", "builder", "--repo", "team/**", "--action", "pull,push",
		"--config", filepath.Join(c.dir, "config.yml"), "--data", c.hostData)
	m := regexp.MustCompile(`secret: (pcr_\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("robot create printed no secret:\n%s", out)
	}
	for on := range haReplicas {
		tok, code := tryBearer(t, "http://"+c.replica(on), "robot+builder", m[1], "repository:team/tok:pull")
		if tok == "" {
			t.Errorf("the robot cannot log in on replica %c: %d", 'a'+on, code)
			continue
		}
		if code, body, _ := haDo(t, http.MethodGet, c.replica((on+1)%haReplicas), "/v2/team/tok/manifests/v1", tok, nil, "Accept", accept); code != http.StatusOK {
			t.Errorf("the robot's token from replica %c on replica %c: %d %s", 'a'+on, 'a'+(on+1)%haReplicas, code, body)
		}
	}
	robotEnv := []string{"DOCKER_CONFIG=" + t.TempDir()}
	run(t, robotEnv, c.crane, "auth", "login", "--insecure", c.addr, "-u", "robot+builder", "-p", m[1])
	run(t, robotEnv, c.crane, "copy", "--insecure", c.addr+"/team/tok:v1", c.addr+"/team/tok:robot")

	run(t, nil, registryBin, "robot", "revoke", "builder", "--config", filepath.Join(c.dir, "config.yml"), "--data", c.hostData)
	for on := range haReplicas {
		if tok, code := tryBearer(t, "http://"+c.replica(on), "robot+builder", m[1], "repository:team/tok:pull"); tok != "" || code != http.StatusUnauthorized {
			t.Errorf("the revoked robot logs in on replica %c: %d", 'a'+on, code)
		}
	}
}

// haReferrers returns the referrers of repo@d on one replica as sorted
// "artifactType digest" lines.
func haReferrers(t *testing.T, addr, token, repo, d string) []string {
	t.Helper()
	code, body, _ := haDo(t, http.MethodGet, addr, "/v2/"+repo+"/referrers/"+d, token, nil)
	if code != http.StatusOK {
		t.Fatalf("referrers of %s@%s on %s: %d %s", repo, d, addr, code, body)
	}
	var idx struct {
		Manifests []struct {
			ArtifactType string `json:"artifactType"`
			Digest       string `json:"digest"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(body, &idx); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range idx.Manifests {
		out = append(out, m.ArtifactType+" "+m.Digest)
	}
	slices.Sort(out)
	return out
}

// haMetric reads one sample from a replica's /metrics (0 when absent).
func haMetric(t *testing.T, addr, name string) float64 {
	t.Helper()
	code, body, _ := haDo(t, http.MethodGet, addr, "/metrics", "", nil, "Authorization", basic("alice", "alice-pw"))
	if code != http.StatusOK {
		t.Fatalf("metrics of %s: %d", addr, code)
	}
	return sampleOf(t, string(body), name)
}

const haReportType = "application/vnd.portcullis.scan.report.v1+json"

// haTrustAndScans: a vulnerability database imported once serves every
// replica; an image pushed before the import and one pushed after are
// each scanned once; a quarantined image is withheld by every replica and
// released by every replica once signed; verdicts, referrers and reports
// read the same on each.
func haTrustAndScans(t *testing.T, c *haCluster, alice remote.Option) {
	status := debianStatus(t)
	before := imageOf(t, map[string]string{"var/lib/dpkg/status": status, "etc/os-release": "ID=debian\nVERSION_ID=\"12\"\n", "marker": "before"})
	after := imageOf(t, map[string]string{"var/lib/dpkg/status": status, "etc/os-release": "ID=debian\nVERSION_ID=\"12\"\n", "marker": "after"})
	if err := remote.Write(ref(t, c.addr+"/team/scanned:before"), before, alice); err != nil {
		t.Fatal(err)
	}
	out := run(t, nil, registryBin, "vulndb", "import", sharedVulnDB, "--config", filepath.Join(c.dir, "config.yml"), "--data", c.hostData)
	if !strings.Contains(out, "Debian") {
		t.Fatalf("vulndb import: %s", out)
	}
	for i := range haReplicas {
		if !eventually(90*time.Second, func() bool { return haMetric(t, c.replica(i), "portcullis_scan_reconcile_runs_total") >= 1 }) {
			t.Fatalf("replica %c never loaded the database", 'a'+i)
		}
	}
	if err := remote.Write(ref(t, c.addr+"/guarded/app:v1"), after, alice); err != nil {
		t.Fatal(err)
	}
	dBefore, dAfter := imageDigest(t, before), imageDigest(t, after)

	bobTok := func(i int, repo string) string {
		tok, code := tryBearer(t, "http://"+c.replica(i), "bob", "bob-pw", "repository:"+repo+":pull")
		if tok == "" {
			t.Fatalf("bob's token from replica %c: %d", 'a'+i, code)
		}
		return tok
	}
	// Quarantined on every replica until signed.
	for i := range haReplicas {
		tok := bobTok(i, "guarded/app")
		if code, body, _ := haDo(t, http.MethodGet, c.replica(i), "/v2/guarded/app/manifests/"+dAfter, tok, nil); code != http.StatusForbidden {
			t.Errorf("replica %c serves quarantined content to bob: %d %.200s", 'a'+i, code, body)
		}
		v := haVerdict(t, c.replica(i), tok, "guarded/app", dAfter, "")
		if v.Trusted || v.Mode != "quarantine" {
			t.Errorf("replica %c: verdict before signing %+v", 'a'+i, v)
		}
	}
	if out, err := runErr(c.aliceEnv, c.cosign, "sign", "--key", c.cosignKey, "--tlog-upload=false", "--use-signing-config=false",
		"--allow-http-registry", "-y", c.addr+"/guarded/app@"+dAfter); err != nil {
		t.Fatalf("cosign sign: %v\n%s", err, out)
	}
	for i := range haReplicas {
		tok := bobTok(i, "guarded/app")
		if v := haVerdict(t, c.replica(i), tok, "guarded/app", dAfter, "?wait=30s"); !v.Trusted {
			t.Errorf("replica %c: verdict after signing %+v", 'a'+i, v)
		}
		if code, body, _ := haDo(t, http.MethodGet, c.replica(i), "/v2/guarded/app/manifests/"+dAfter, tok, nil); code != http.StatusOK {
			t.Errorf("replica %c withholds signed content from bob: %d %.200s", 'a'+i, code, body)
		}
	}

	// One report per image, the same on every replica, once every replica
	// has worked off what it queued.
	images := []struct{ repo, d string }{{"team/scanned", dBefore}, {"guarded/app", dAfter}}
	for _, img := range images {
		var reports [haReplicas][]byte
		for i := range haReplicas {
			tok := bobTok(i, img.repo)
			var code int
			if !eventually(90*time.Second, func() bool {
				code, reports[i], _ = haDo(t, http.MethodGet, c.replica(i), "/api/v1/repositories/"+img.repo+"/manifests/"+img.d+"/vulnerabilities", tok, nil)
				return code == http.StatusOK
			}) {
				t.Fatalf("replica %c: no report for %s@%s: %d %s", 'a'+i, img.repo, img.d, code, reports[i])
			}
			if i > 0 && !bytes.Equal(reports[i], reports[0]) {
				t.Errorf("replica %c's report of %s differs from replica a's:\n%s\n%s", 'a'+i, img.repo, reports[i], reports[0])
			}
		}
	}
	for i := range haReplicas {
		if !eventually(90*time.Second, func() bool { return haMetric(t, c.replica(i), "portcullis_scan_outbox_pending") == 0 }) {
			t.Errorf("replica %c: scans still pending after 90s", 'a'+i)
		}
	}
	var scans float64
	for i := range haReplicas {
		scans += haMetric(t, c.replica(i), `portcullis_scan_scans_total{result="ok"}`)
	}
	t.Logf("scans over all replicas: %v", scans)
	// Every replica lists the same referrers, with want reports.
	checkReports := func(want int) {
		t.Helper()
		for _, img := range images {
			var first []string
			for i := range haReplicas {
				refs := haReferrers(t, c.replica(i), bobTok(i, img.repo), img.repo, img.d)
				n := 0
				for _, r := range refs {
					if strings.HasPrefix(r, haReportType+" ") {
						n++
					}
				}
				if n != want {
					t.Errorf("replica %c: %s@%s has %d scan reports, want %d:\n%s", 'a'+i, img.repo, img.d, n, want, strings.Join(refs, "\n"))
				}
				if i == 0 {
					first = refs
				} else if !slices.Equal(refs, first) {
					t.Errorf("replica %c lists other referrers of %s than replica a:\n%s\n--\n%s", 'a'+i, img.repo, strings.Join(refs, "\n"), strings.Join(first, "\n"))
				}
			}
			if img.repo == "guarded/app" && len(first) < 2 {
				t.Errorf("the signed image's referrers lack the signature or the report:\n%s", strings.Join(first, "\n"))
			}
		}
	}
	checkReports(1)

	// A new database that changes the findings: every replica re-matches
	// what it scanned or restored, and each image gets one new report
	// between them.
	out = run(t, nil, registryBin, "vulndb", "import", bundleWithout(t, "Debian"), "--config", filepath.Join(c.dir, "config.yml"), "--data", c.hostData)
	if strings.Contains(out, "Debian") {
		t.Fatalf("vulndb import: %s", out)
	}
	for i := range haReplicas {
		// The reconcile pass after a new database follows its re-match.
		if !eventually(90*time.Second, func() bool { return haMetric(t, c.replica(i), "portcullis_scan_reconcile_runs_total") >= 2 }) {
			t.Fatalf("replica %c never loaded the second database", 'a'+i)
		}
	}
	var rematched float64
	for i := range haReplicas {
		rematched += haMetric(t, c.replica(i), "portcullis_scan_rematched_reports_total")
	}
	t.Logf("reports re-matched over all replicas: %v", rematched)
	checkReports(2)
}

// haVerdict reads the trust verdict of repo@d from one replica.
func haVerdict(t *testing.T, addr, token, repo, d, query string) verdictJSON {
	t.Helper()
	code, body, _ := haDo(t, http.MethodGet, addr, "/api/v1/repositories/"+repo+"/manifests/"+d+"/verdict"+query, token, nil)
	var v verdictJSON
	if code != http.StatusOK || json.Unmarshal(body, &v) != nil {
		t.Fatalf("verdict on %s: %d %s", addr, code, body)
	}
	return v
}

// haDeletes: a manifest and a blob deleted through replica a are gone on
// b and c at once, though b and c had just served them.
func haDeletes(t *testing.T, c *haCluster, alice remote.Option) {
	img := c.pushRandom(t, "team/gone:v1", 2048, 2, alice)
	d := imageDigest(t, img)
	layers, _ := img.Layers()
	blob, _ := layers[0].Digest()
	tok, code := tryBearer(t, "http://"+c.replica(0), "alice", "alice-pw", "repository:team/gone:pull,push,delete")
	if tok == "" {
		t.Fatalf("token: %d", code)
	}
	manifest := "/v2/team/gone/manifests/" + d
	blobPath := "/v2/team/gone/blobs/" + blob.String()
	for i := range haReplicas {
		for _, p := range []string{manifest, blobPath, "/v2/team/gone/manifests/v1"} {
			if code, _, _ := haDo(t, http.MethodHead, c.replica(i), p, tok, nil); code != http.StatusOK {
				t.Fatalf("replica %c: HEAD %s before the delete: %d", 'a'+i, p, code)
			}
		}
	}
	if code, body, _ := haDo(t, http.MethodDelete, c.replica(0), manifest, tok, nil); code != http.StatusAccepted {
		t.Fatalf("DELETE manifest on replica a: %d %s", code, body)
	}
	for i := 1; i < haReplicas; i++ {
		for _, p := range []string{manifest, "/v2/team/gone/manifests/v1"} {
			for _, m := range []string{http.MethodHead, http.MethodGet} {
				if code, _, _ := haDo(t, m, c.replica(i), p, tok, nil); code != http.StatusNotFound {
					t.Errorf("replica %c: %s %s right after the delete on a: %d", 'a'+i, m, p, code)
				}
			}
		}
	}
	if code, body, _ := haDo(t, http.MethodDelete, c.replica(0), blobPath, tok, nil); code != http.StatusAccepted {
		t.Fatalf("DELETE blob on replica a: %d %s", code, body)
	}
	for i := 1; i < haReplicas; i++ {
		for _, m := range []string{http.MethodHead, http.MethodGet} {
			if code, _, _ := haDo(t, m, c.replica(i), blobPath, tok, nil); code != http.StatusNotFound {
				t.Errorf("replica %c: %s blob right after the delete on a: %d", 'a'+i, m, code)
			}
		}
	}
}

// haLoad is a continuous load of pushes and pulls through the proxy by
// go-containerregistry, crane and plain token requests. A failure is an
// error a client returned after its own retries.
type haLoad struct {
	cancel        context.CancelFunc
	wg            sync.WaitGroup
	ops, failures atomic.Int64
	mu            sync.Mutex
	errs          []string
	perWorker     map[string]*atomic.Int64
}

func haStartLoad(t *testing.T, c *haCluster) *haLoad {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &haLoad{cancel: cancel, perWorker: map[string]*atomic.Int64{}}
	basic := &authn.Basic{Username: "alice", Password: "alice-pw"}
	fixed, err := random.Image(64<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	fixedRef := ref(t, c.addr+"/load/fixed:v1")
	if err := remote.Write(fixedRef, fixed, remote.WithAuth(basic)); err != nil {
		t.Fatal(err)
	}
	fixedDigest := imageDigest(t, fixed)
	// Reused: one token serves many requests, on every replica.
	puller, err := remote.NewPuller(remote.WithAuth(basic))
	if err != nil {
		t.Fatal(err)
	}
	pusher, err := remote.NewPusher(remote.WithAuth(basic))
	if err != nil {
		t.Fatal(err)
	}
	pull := func(ctx context.Context, r name.Reference, want string) error {
		img, err := remote.Image(r, remote.Reuse(puller), remote.WithContext(ctx))
		if err != nil {
			return err
		}
		if err := validate.Image(img); err != nil {
			return err
		}
		if d, _ := img.Digest(); d.String() != want {
			return fmt.Errorf("pulled %s, want %s", d, want)
		}
		return nil
	}
	worker := func(name string, op func(ctx context.Context, n int) error) {
		done := &atomic.Int64{}
		l.perWorker[name] = done
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				err := op(ctx, n)
				if ctx.Err() != nil {
					return
				}
				l.ops.Add(1)
				done.Add(1)
				if err != nil {
					l.failures.Add(1)
					l.mu.Lock()
					l.errs = append(l.errs, fmt.Sprintf("%s #%d: %v", name, n, err))
					l.mu.Unlock()
				}
			}
		}()
	}
	for w := range 2 {
		worker(fmt.Sprintf("ggcr push %d", w), func(ctx context.Context, n int) error {
			img, err := random.Image(32<<10, 2)
			if err != nil {
				return err
			}
			r, err := name.ParseReference(fmt.Sprintf("%s/load/push%d:v%d", c.addr, w, n), name.Insecure)
			if err != nil {
				return err
			}
			if err := remote.Write(r, img, remote.Reuse(pusher), remote.WithContext(ctx)); err != nil {
				return fmt.Errorf("push: %w", err)
			}
			d, _ := img.Digest()
			return pull(ctx, r, d.String())
		})
		worker(fmt.Sprintf("ggcr pull %d", w), func(ctx context.Context, _ int) error {
			return pull(ctx, fixedRef, fixedDigest)
		})
	}
	tars := t.TempDir()
	worker("crane", func(ctx context.Context, n int) error {
		img, err := random.Image(16<<10, 1)
		if err != nil {
			return err
		}
		tarPath := filepath.Join(tars, fmt.Sprintf("%d.tar", n))
		defer os.Remove(tarPath)
		if err := tarball.WriteToFile(tarPath, fixedRef, img); err != nil {
			return err
		}
		target := fmt.Sprintf("%s/load/crane:v%d", c.addr, n)
		for _, args := range [][]string{{"push", "--insecure", tarPath, target}, {"pull", "--insecure", target, tarPath + ".pulled"}} {
			cmd := exec.CommandContext(ctx, c.crane, args...)
			cmd.Env = append(os.Environ(), c.aliceEnv...)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("crane %s: %w\n%s", args[0], err, out)
			}
		}
		return os.Remove(tarPath + ".pulled")
	})
	worker("token", func(ctx context.Context, _ int) error {
		// A fresh token from whichever replica the proxy picks, used on
		// the next ones.
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.addr+"/token?service=portcullis&scope=repository:load/fixed:pull", nil)
		req.SetBasicAuth("alice", "alice-pw")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		var tok struct{ Token string }
		err = json.NewDecoder(resp.Body).Decode(&tok)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			return fmt.Errorf("token: %d %v", resp.StatusCode, err)
		}
		for range haReplicas {
			req, _ := http.NewRequestWithContext(ctx, http.MethodHead, "http://"+c.addr+"/v2/load/fixed/manifests/"+fixedDigest, nil)
			req.Header.Set("Authorization", "Bearer "+tok.Token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("HEAD manifest with a token: %d", resp.StatusCode)
			}
		}
		return nil
	})
	return l
}

// stop ends the load and fails the test on any failure, or when a worker
// got nothing done.
func (l *haLoad) stop(t *testing.T) {
	t.Helper()
	// A rolling restart can be over in seconds: the load goes on until
	// every worker has finished something (a worker stuck longer fails).
	eventually(60*time.Second, func() bool {
		for _, n := range l.perWorker {
			if n.Load() == 0 {
				return false
			}
		}
		return true
	})
	l.cancel()
	l.wg.Wait()
	var per []string
	for name, n := range l.perWorker {
		per = append(per, fmt.Sprintf("%s %d", name, n.Load()))
		if n.Load() == 0 {
			t.Errorf("load: %s completed nothing", name)
		}
	}
	slices.Sort(per)
	t.Logf("load: %d operations, %d failures (%s)", l.ops.Load(), l.failures.Load(), strings.Join(per, ", "))
	if l.failures.Load() > 0 {
		t.Errorf("load: %d failures the clients did not retry:\n%s", l.failures.Load(), strings.Join(l.errs, "\n"))
	}
}

// haSlowTransport sends PATCH bodies at rate bytes per second: a client
// on a slow link, so that a large upload is still in flight when its
// replica is killed.
type haSlowTransport struct {
	inner http.RoundTripper
	rate  int
}

func (s *haSlowTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPatch && req.Body != nil {
		req = req.Clone(req.Context())
		req.Body = &haSlowBody{ReadCloser: req.Body, rate: s.rate}
	}
	return s.inner.RoundTrip(req)
}

type haSlowBody struct {
	io.ReadCloser
	rate int
}

func (b *haSlowBody) Read(p []byte) (int, error) {
	if len(p) > 64<<10 {
		p = p[:64<<10]
	}
	n, err := b.ReadCloser.Read(p)
	time.Sleep(time.Duration(n) * time.Second / time.Duration(b.rate))
	return n, err
}

// haKillMidPush: the replica receiving a large layer is killed (SIGKILL)
// mid-upload; go-containerregistry's retry goes to another replica and the
// push completes; the image pulls whole from every replica, the killed one
// once it is back.
func haKillMidPush(t *testing.T, c *haCluster, alice remote.Option) {
	layer, err := random.Layer(24<<20, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	r := ref(t, c.addr+"/team/big:v1")
	done := make(chan error, 1)
	go func() {
		done <- remote.Write(r, img, alice, remote.WithTransport(&haSlowTransport{inner: remote.DefaultTransport, rate: 4 << 20}))
	}()
	victim := -1
	if !eventually(60*time.Second, func() bool {
		for i, n := range c.proxy.inflightBytes() {
			if n > 4<<20 {
				victim = i
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no large upload in flight within 60s")
	}
	run(t, nil, c.docker, "kill", c.names[victim])
	t.Logf("killed replica %c mid-upload", 'a'+victim)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the push did not complete through another replica: %v", err)
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("the push did not return within 3 minutes")
	}
	d := imageDigest(t, img)
	check := func(i int) {
		t.Helper()
		if got := c.readWhole(t, i, "team/big:v1", alice); got != d {
			t.Errorf("replica %c serves %s, pushed %s", 'a'+i, got, d)
		}
	}
	for i := range haReplicas {
		if i != victim {
			check(i)
		}
	}
	run(t, nil, c.docker, "start", c.names[victim])
	c.waitReplica(t, victim)
	check(victim)
}

// haKeyRotation rotates the token signing key in two rolling restarts
// under load: first every replica also accepts the new key, then every
// replica signs with it (and still accepts the old one). No pull fails.
func haKeyRotation(t *testing.T, c *haCluster) {
	before, code := tryBearer(t, "http://"+c.replica(0), "alice", "alice-pw", "repository:team/tok:pull")
	if before == "" {
		t.Fatalf("token: %d", code)
	}
	load := haStartLoad(t, c)
	c.verification = []string{"token-2.pem"}
	c.writeConfig(t)
	c.rollingRestart(t)
	c.signing, c.verification = "token-2.pem", []string{"token-1.pem"}
	c.writeConfig(t)
	c.rollingRestart(t)
	load.stop(t)

	after, code := tryBearer(t, "http://"+c.replica(1), "alice", "alice-pw", "repository:team/tok:pull")
	if after == "" {
		t.Fatalf("token: %d", code)
	}
	if haKID(t, before) == haKID(t, after) {
		t.Errorf("the replicas still sign with the old key (kid %s)", haKID(t, after))
	}
	// A token signed with the old key before the switch is still good.
	for i := range haReplicas {
		if code, _, _ := haDo(t, http.MethodHead, c.replica(i), "/v2/team/tok/manifests/v1", before, nil); code != http.StatusOK {
			t.Errorf("replica %c refuses a token of the previous key: %d", 'a'+i, code)
		}
	}
}

// haKID returns the kid header of a JWT.
func haKID(t *testing.T, token string) string {
	t.Helper()
	head, _, _ := strings.Cut(token, ".")
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		KID string `json:"kid"`
	}
	if err := json.Unmarshal(b, &h); err != nil || h.KID == "" {
		t.Fatalf("token header %s: %v", b, err)
	}
	return h.KID
}
