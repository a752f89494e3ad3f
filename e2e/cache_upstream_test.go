package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/internal/testenv"
)

// distRegistry is distribution's own registry binary: anonymous, on a
// filesystem in a temporary directory, writing an access log line per
// request to its output.
type distRegistry struct {
	Addr string
	cmd  *exec.Cmd
	logs *testenv.Buffer
	done chan error
}

// URL returns the base URL.
func (d *distRegistry) URL() string { return "http://" + d.Addr }

// startDistribution runs distribution-registry and waits until /v2/
// answers; it is stopped at cleanup.
func startDistribution(t *testing.T) *distRegistry {
	t.Helper()
	bin := tool(t, "distribution-registry")
	dir := t.TempDir()
	d := &distRegistry{Addr: freeAddr(t), logs: &testenv.Buffer{}, done: make(chan error, 1)}
	cfg := filepath.Join(dir, "config.yml")
	writeFile(t, cfg, fmt.Sprintf(`version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, "data"), d.Addr))
	d.cmd = exec.Command(bin, "serve", cfg)
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(30 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	})
	ok := eventually(30*time.Second, func() bool {
		select {
		case err := <-d.done:
			t.Fatalf("distribution-registry exited during start-up: %v\n%s", err, d.logs.String())
		default:
		}
		resp, err := http.Get(d.URL() + "/v2/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if !ok {
		t.Fatalf("distribution-registry not ready after 30s\n%s", d.logs.String())
	}
	return d
}

// gets counts the GETs in the access log whose path contains part.
func (d *distRegistry) gets(part string) int {
	// The request of a combined-log-format line.
	accessLine := regexp.MustCompile(`"([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3}) `)
	n := 0
	for _, m := range accessLine.FindAllStringSubmatch(d.logs.String(), -1) {
		if m[1] == http.MethodGet && strings.Contains(m[2], part) {
			n++
		}
	}
	return n
}

// authUpstream is a second Portcullis with auth on, so that a cache goes
// through the bearer token flow Docker Hub uses: alice pushes the content
// the tests pull through the cache, bob (pull only, everywhere) is the
// cache's account.
type authUpstream struct {
	reg                *Registry
	userFile, passFile string        // bob's credentials, as files for remotes[].usernameFile/passwordFile
	seedEnv            []string      // a docker config where crane is logged in as alice
	seedAuth           remote.Option // alice, for seeding from the test
}

// startAuthUpstream runs the auth upstream and logs crane in as alice.
func startAuthUpstream(t *testing.T) *authUpstream {
	t.Helper()
	crane := tool(t, "crane")
	u := &authUpstream{reg: startRegistry(t, startOptions{config: "version: 1\n" + aliceAndBob(t)})}
	dir := t.TempDir()
	u.userFile, u.passFile = filepath.Join(dir, "username"), filepath.Join(dir, "password")
	writeFile(t, u.userFile, "bob\n")
	writeFile(t, u.passFile, "bob-pw\n")
	u.seedEnv = []string{"DOCKER_CONFIG=" + t.TempDir()}
	run(t, u.seedEnv, crane, "auth", "login", "--insecure", u.reg.Addr, "-u", "alice", "-p", "alice-pw")
	u.seedAuth = remote.WithAuth(&authn.Basic{Username: "alice", Password: "alice-pw"})
	return u
}

// runnableImage returns an image for this machine's platform whose one
// layer, a real gzipped tar, holds hello.txt with content: docker, ctr
// and podman unpack it.
func runnableImage(t *testing.T, content string) v1.Image {
	t.Helper()
	return platformImage(t, runtime.GOARCH, content)
}

// platformImage returns a one-layer linux/arch image holding hello.txt.
func platformImage(t *testing.T, arch, content string) v1.Image {
	t.Helper()
	data := tarOf(t, map[string]string{"hello.txt": content})
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Config.Cmd = []string{"/hello.txt"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// platformIndex returns an OCI index of two images, linux/amd64 and
// linux/arm64, each with its platform in the index.
func platformIndex(t *testing.T, content string) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for _, arch := range []string{"amd64", "arm64"} {
		img := platformImage(t, arch, content+" "+arch)
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
}

// seedImage pushes img to ref with crane (env carries its credentials)
// and returns the digest crane pushed (a tarball makes it a Docker
// manifest, whatever img's media type).
func seedImage(t *testing.T, env []string, ref string, img v1.Image) string {
	t.Helper()
	tarPath := filepath.Join(t.TempDir(), "img.tar")
	writeTarball(t, tarPath, img)
	out := run(t, env, tool(t, "crane"), "push", "--insecure", tarPath, ref)
	m := regexp.MustCompile(`@(sha256:[0-9a-f]{64})`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("crane push printed no digest: %s", out)
	}
	return m[1]
}

// randomBlob returns n random bytes and their digest.
func randomBlob(t *testing.T, n int) ([]byte, digest.Digest) {
	t.Helper()
	data := make([]byte, n)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	return data, digest.FromBytes(data)
}

// seedBlobArtifact pushes data as the one layer of an OCI artifact (not an
// image: nothing scans it) tagged ref in repo of an anonymous registry at
// base, and returns the manifest's digest.
func seedBlobArtifact(t *testing.T, base, repo, tag string, data []byte) string {
	t.Helper()
	cfg := []byte("{}")
	for _, b := range [][]byte{cfg, data} {
		uploadBlob(t, base, repo, b)
	}
	m, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"artifactType":  "application/vnd.portcullis.e2e.blob",
		"config": map[string]any{"mediaType": "application/vnd.oci.empty.v1+json",
			"digest": digest.FromBytes(cfg).String(), "size": len(cfg)},
		"layers": []map[string]any{{"mediaType": "application/octet-stream",
			"digest": digest.FromBytes(data).String(), "size": len(data)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPut, base+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(m))
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("put manifest %s:%s: %d %s", repo, tag, resp.StatusCode, body)
	}
	return digest.FromBytes(m).String()
}

// uploadBlob pushes data to repo with a monolithic upload.
func uploadBlob(t *testing.T, base, repo string, data []byte) {
	t.Helper()
	resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" {
		t.Fatalf("start upload in %s: %d", repo, resp.StatusCode)
	}
	if !strings.HasPrefix(loc, "http") {
		loc = base + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, _ := http.NewRequest(http.MethodPut, loc+sep+"digest="+digest.FromBytes(data).String(), bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload to %s: %d %s", repo, resp.StatusCode, body)
	}
}

// cosignKeys generates a cosign key pair offline and returns the paths of
// the private and public keys.
func cosignKeys(t *testing.T) (key, pub string) {
	t.Helper()
	dir := t.TempDir()
	runIn(t, dir, tool(t, "cosign"), "generate-key-pair")
	return filepath.Join(dir, "cosign.key"), filepath.Join(dir, "cosign.pub")
}

// cosignSign signs ref with key, offline; extra flags come first.
func cosignSign(t *testing.T, env []string, key, ref string, extra ...string) {
	t.Helper()
	args := append([]string{"sign", "--key", key, "--tlog-upload=false", "--use-signing-config=false", "--allow-http-registry", "-y"}, extra...)
	run(t, env, tool(t, "cosign"), append(args, ref)...)
}

// cosignVerify verifies ref's signature with pub, offline, and returns
// cosign's output and error.
func cosignVerify(t *testing.T, env []string, pub, ref string) (string, error) {
	t.Helper()
	return runErr(env, tool(t, "cosign"), "verify", "--key", pub, "--insecure-ignore-tlog=true", "--allow-http-registry", ref)
}

// TestCacheUpstreams checks the upstream setups and the fault proxy on
// their own: seeded and pulled directly, each fault seen by a plain client.
func TestCacheUpstreams(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")

	t.Run("distribution", func(t *testing.T) {
		t.Parallel()
		d := startDistribution(t)
		img, _ := random.Image(2048, 2)
		want := seedImage(t, nil, d.Addr+"/library/plain:v1", img)
		if got := strings.TrimSpace(run(t, nil, crane, "digest", "--insecure", d.Addr+"/library/plain:v1")); got != want {
			t.Errorf("crane digest = %s, want %s", got, want)
		}
		before := d.gets("/manifests/v1")
		run(t, nil, crane, "pull", "--insecure", d.Addr+"/library/plain:v1", filepath.Join(t.TempDir(), "img.tar"))
		if got := d.gets("/manifests/v1"); got != before+1 {
			t.Errorf("access log counts %d manifest GETs after one pull, %d before\n%s", got, before, d.logs.String())
		}
	})

	t.Run("auth portcullis", func(t *testing.T) {
		t.Parallel()
		u := startAuthUpstream(t)
		want := seedImage(t, u.seedEnv, u.reg.Addr+"/library/hello:v1", runnableImage(t, "hello"))
		if out, err := runErr([]string{"DOCKER_CONFIG=" + t.TempDir()}, crane, "digest", "--insecure", u.reg.Addr+"/library/hello:v1"); err == nil {
			t.Errorf("anonymous pull from the auth upstream succeeded: %s", out)
		}
		bobEnv := []string{"DOCKER_CONFIG=" + t.TempDir()}
		run(t, bobEnv, crane, "auth", "login", "--insecure", u.reg.Addr, "-u", "bob", "-p", "bob-pw")
		if got := strings.TrimSpace(run(t, bobEnv, crane, "digest", "--insecure", u.reg.Addr+"/library/hello:v1")); got != want {
			t.Errorf("bob's digest = %s, want %s", got, want)
		}
		idx := platformIndex(t, "multi")
		if err := remote.WriteIndex(ref(t, u.reg.Addr+"/library/multi:v1"), idx, u.seedAuth); err != nil {
			t.Fatal(err)
		}
		idxDigest, _ := idx.Digest()
		if got := strings.TrimSpace(run(t, bobEnv, crane, "digest", "--insecure", u.reg.Addr+"/library/multi:v1")); got != idxDigest.String() {
			t.Errorf("index digest = %s, want %s", got, idxDigest)
		}
	})

	t.Run("signatures and referrers", func(t *testing.T) {
		t.Parallel()
		oras := tool(t, "oras")
		key, pub := cosignKeys(t)
		reg := startRegistry(t, startOptions{config: "version: 1\n"})
		d := startDistribution(t)
		for _, c := range []struct {
			name, host string
			flags      []string
		}{
			{"bundle on portcullis", reg.Addr, nil},
			{"tag schema on portcullis", reg.Addr, []string{"--new-bundle-format=false"}},
			{"tag schema on distribution", d.Addr, []string{"--new-bundle-format=false"}},
		} {
			dg := seedImage(t, nil, c.host+"/library/signed:"+strings.ReplaceAll(c.name, " ", "-"), runnableImage(t, c.name))
			r := c.host + "/library/signed@" + dg
			cosignSign(t, nil, key, r, c.flags...)
			if out, err := cosignVerify(t, nil, pub, r); err != nil {
				t.Errorf("%s: cosign verify: %v\n%s", c.name, err, out)
			}
		}
		work := t.TempDir()
		writeFile(t, filepath.Join(work, "sbom.json"), `{"spdxVersion":"SPDX-2.3"}`)
		dg := seedImage(t, nil, reg.Addr+"/library/attached:v1", runnableImage(t, "attached"))
		runIn(t, work, oras, "attach", "--plain-http", "--artifact-type", "application/spdx+json", reg.Addr+"/library/attached@"+dg, "sbom.json")
		if got := referrerTypes(t, reg.URL(), "library/attached", dg); !strings.Contains(strings.Join(got, ","), "application/spdx+json") {
			t.Errorf("referrers of the attached image: %v", got)
		}
	})

	t.Run("fault proxy", func(t *testing.T) {
		t.Parallel()
		d := startDistribution(t)
		data, dg := randomBlob(t, 1<<20)
		seedBlobArtifact(t, d.URL(), "library/blob", "v1", data)
		p := startFaultProxy(t, d.URL())
		blobURL := p.URL() + "/v2/library/blob/blobs/" + dg.String()
		fetch := func(c *http.Client) (int, []byte, error) {
			resp, err := c.Get(blobURL)
			if err != nil {
				return 0, nil, err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			return resp.StatusCode, b, err
		}

		status, got, err := fetch(http.DefaultClient)
		if status != http.StatusOK || err != nil || digest.FromBytes(got) != dg {
			t.Errorf("pass-through: %d %v, digest ok %v", status, err, digest.FromBytes(got) == dg)
		}
		if n := p.blobGets(dg.String()); n != 1 {
			t.Errorf("proxy counted %d blob GETs, want 1", n)
		}
		if n := d.gets("/blobs/" + dg.String()); n != 1 {
			t.Errorf("upstream log counts %d blob GETs, want 1", n)
		}
		run(t, nil, crane, "manifest", "--insecure", p.Addr+"/library/blob:v1")

		p.setMode(corruptBlobs)
		status, got, err = fetch(http.DefaultClient)
		if status != http.StatusOK || err != nil || len(got) != len(data) || digest.FromBytes(got) == dg {
			t.Errorf("corrupt: %d %v, %d bytes, digest unchanged %v", status, err, len(got), digest.FromBytes(got) == dg)
		}

		p.resetBlobsAfter(64 << 10)
		status, got, err = fetch(http.DefaultClient)
		if status != http.StatusOK || err == nil || len(got) >= len(data) {
			t.Errorf("reset mid-body: %d, %d bytes, err %v; want 200, a short body and an error", status, len(got), err)
		}

		p.setMode(passThrough)
		p.throttle(4 << 20)
		start := time.Now()
		status, got, err = fetch(http.DefaultClient)
		if took := time.Since(start); status != http.StatusOK || err != nil || digest.FromBytes(got) != dg || took < 200*time.Millisecond {
			t.Errorf("throttled to 4 MiB/s: %d %v in %v, want 1 MiB in at least 200ms", status, err, took)
		}
		p.throttle(0)

		accepted := p.acceptedConns()
		p.setMode(hangAfterAccept)
		fresh := func(timeout time.Duration) *http.Client {
			return &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
		}
		if _, _, err := fetch(fresh(300 * time.Millisecond)); err == nil {
			t.Error("hang after accept: the request got an answer")
		}
		p.setMode(refuse)
		requests := p.total()
		if _, _, err := fetch(fresh(5 * time.Second)); err == nil {
			t.Error("refuse: the request got an answer")
		}
		if got := p.acceptedConns(); got != accepted+2 {
			t.Errorf("accepted connections: %d, want %d", got, accepted+2)
		}
		if got := p.total(); got != requests {
			t.Errorf("refused connections counted as requests: %d, want %d", got, requests)
		}
	})
}
