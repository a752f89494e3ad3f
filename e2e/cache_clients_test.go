package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/internal/testenv"
)

// TestCacheClients pulls through the cache, from a Portcullis upstream
// that wants a bearer token, with every real client: docker by prefix,
// ctr and its ?ns= mirror, skopeo and podman with a registries.conf
// mirror, crane (a multi-platform index, digest unchanged) and the
// unprefixed listener; headers, metrics and the status API along the way.
func TestCacheClients(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	u := startAuthUpstream(t)
	up := u.reg.Addr
	digests := map[string]string{}
	configs := map[string]string{}
	for _, name := range []string{"plain", "docker", "ctr", "skopeo", "podman"} {
		img := runnableImage(t, name+" through the cache")
		digests[name] = seedImage(t, u.seedEnv, up+"/library/"+name+":v1", img)
		cfg, _ := img.ConfigName()
		configs[name] = cfg.String()
	}
	idx := platformIndex(t, "multi")
	if err := remote.WriteIndex(ref(t, up+"/library/multi:v1"), idx, u.seedAuth); err != nil {
		t.Fatal(err)
	}
	idxDigest, _ := idx.Digest()
	mirror := freeAddr(t)
	reg := startCache(t, cacheConfig{url: u.reg.URL(), userFile: u.userFile, passFile: u.passFile, listen: mirror})
	h := reg.Addr

	t.Run("headers, metrics and status", func(t *testing.T) {
		manifest := reg.URL() + "/v2/hub/library/plain/manifests/v1"
		first := do(t, http.MethodGet, manifest)
		if first.status != http.StatusOK || digest.FromBytes(first.body).String() != digests["plain"] ||
			first.header.Get("Docker-Content-Digest") != digests["plain"] {
			t.Fatalf("GET %s: %v, want the upstream's manifest %s", manifest, first, digests["plain"])
		}
		if first.cacheHeader() != "miss" {
			t.Errorf("first GET %s: X-Portcullis-Cache %q, want miss", manifest, first.cacheHeader())
		}
		if again := do(t, http.MethodGet, manifest); again.status != http.StatusOK || again.cacheHeader() != "hit" {
			t.Errorf("second GET %s: %v, want 200 and hit", manifest, again)
		}
		// Docker Hub's one-word names live under library/.
		if short := do(t, http.MethodGet, reg.URL()+"/v2/hub/plain/manifests/v1"); short.status != http.StatusOK ||
			digest.FromBytes(short.body).String() != digests["plain"] {
			t.Errorf("GET /v2/hub/plain/manifests/v1: %v, want hub/library/plain's manifest", short)
		}
		cfgBlob := reg.URL() + "/v2/hub/library/plain/blobs/" + configs["plain"]
		b := do(t, http.MethodGet, cfgBlob)
		if b.status != http.StatusOK || digest.FromBytes(b.body).String() != configs["plain"] {
			t.Errorf("GET %s: %v", cfgBlob, b)
		}
		if c := b.cacheHeader(); c != "miss" && c != "hit" {
			t.Errorf("GET %s: X-Portcullis-Cache %q, want miss or hit", cfgBlob, c)
		}
		if again := do(t, http.MethodGet, cfgBlob); again.status != http.StatusOK || again.cacheHeader() != "hit" {
			t.Errorf("second GET %s: %v, want 200 and hit", cfgBlob, again)
		}
		// Served on the cache's own listener with unprefixed paths (Docker's
		// registry-mirrors), one-word names included.
		for _, path := range []string{"/v2/library/plain/manifests/v1", "/v2/plain/manifests/v1"} {
			if r := do(t, http.MethodGet, "http://"+mirror+path); r.status != http.StatusOK || digest.FromBytes(r.body).String() != digests["plain"] {
				t.Errorf("GET %s on the cache listener: %v", path, r)
			}
		}
		for _, path := range []string{"/v2/library/plain/manifests/v1?ns=docker.io", "/v2/plain/manifests/v1?ns=docker.io"} {
			if r := do(t, http.MethodGet, reg.URL()+path); r.status != http.StatusOK || digest.FromBytes(r.body).String() != digests["plain"] {
				t.Errorf("GET %s: %v", path, r)
			}
		}

		for _, c := range []struct{ kind, result string }{{"manifest", "miss"}, {"manifest", "hit"}, {"blob", "hit"}} {
			if got := cacheResults(t, reg, c.kind, c.result); got < 1 {
				t.Errorf(`portcullis_cache_requests_total{cache="hub",kind=%q,result=%q} = %v, want at least 1`, c.kind, c.result, got)
			}
		}
		if got := metricSum(t, reg, "portcullis_remote_requests_total", `remote="up"`); got < 2 {
			t.Errorf(`portcullis_remote_requests_total{remote="up"} sums to %v, want at least a manifest and a blob`, got)
		}
		if got := metricSum(t, reg, "portcullis_remote_bytes_total", `remote="up"`); got < float64(len(b.body)) {
			t.Errorf(`portcullis_remote_bytes_total{remote="up"} = %v, want at least the config's %d bytes`, got, len(b.body))
		}
		got := caches(t, reg)
		if len(got) != 1 {
			t.Fatalf("/api/v1/caches lists %d caches, want 1: %+v", len(got), got)
		}
		c := got[0]
		if c.Prefix != "hub" || c.Remote != "up" || strings.TrimSuffix(c.URL, "/") != u.reg.URL() ||
			!cmp.Equal(c.Hosts, []string{"docker.io"}) || !c.RemoteState.Available || c.RemoteState.Failures != 0 {
			t.Errorf("/api/v1/caches entry: %+v", c)
		}
	})

	t.Run("docker by prefix", func(t *testing.T) {
		t.Parallel()
		docker := tool(t, "docker")
		image := h + "/hub/library/docker:v1"
		run(t, nil, docker, "pull", image)
		t.Cleanup(func() { _, _ = runErr(nil, docker, "rmi", "-f", image) })
		if got := strings.TrimSpace(run(t, nil, docker, "inspect", "--format", "{{.Id}}", image)); got != configs["docker"] {
			t.Errorf("docker pulled image id %s, want %s", got, configs["docker"])
		}
		if got := run(t, nil, docker, "inspect", "--format", "{{json .RepoDigests}}", image); !strings.Contains(got, digests["docker"]) {
			t.Errorf("docker's repo digests %s lack the upstream's %s", got, digests["docker"])
		}
	})

	t.Run("ctr with a docker.io mirror", func(t *testing.T) {
		t.Parallel()
		ctr := tool(t, "ctr")
		addr := startContainerd(t)
		hostsDir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(hostsDir, "docker.io"), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(hostsDir, "docker.io", "hosts.toml"), fmt.Sprintf(`server = "https://registry-1.docker.io"

[host."http://%s"]
  capabilities = ["pull", "resolve"]
`, h))
		before := cacheResults(t, reg, "manifest", "miss")
		run(t, nil, ctr, "--address", addr, "-n", "e2e", "images", "pull", "--snapshotter", "native",
			"--hosts-dir", hostsDir, "docker.io/library/ctr:v1")
		if got := run(t, nil, ctr, "--address", addr, "-n", "e2e", "images", "ls"); !strings.Contains(got, digests["ctr"]) {
			t.Errorf("ctr images ls lacks %s:\n%s", digests["ctr"], got)
		}
		if after := cacheResults(t, reg, "manifest", "miss"); after <= before {
			t.Errorf("ctr's pull was no cache miss (%v before, %v after): it did not come through ?ns=docker.io", before, after)
		}
	})

	registriesConf := filepath.Join(t.TempDir(), "registries.conf")
	writeFile(t, registriesConf, fmt.Sprintf(`[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "%s/hub"
insecure = true
`, h))
	mirrorEnv := []string{"CONTAINERS_REGISTRIES_CONF=" + registriesConf}

	t.Run("skopeo with a mirror", func(t *testing.T) {
		t.Parallel()
		skopeo := tool(t, "skopeo")
		dst := filepath.Join(t.TempDir(), "dst")
		// skopeo 1.9 reads CONTAINERS_REGISTRIES_CONF only through its flag.
		run(t, mirrorEnv, skopeo, "--registries-conf", registriesConf, "copy", "docker://docker.io/library/skopeo:v1", "dir:"+dst)
		raw, err := os.ReadFile(filepath.Join(dst, "manifest.json"))
		if err != nil {
			t.Fatal(err)
		}
		if got := digest.FromBytes(raw).String(); got != digests["skopeo"] {
			t.Errorf("skopeo copied manifest %s, want %s", got, digests["skopeo"])
		}
		if _, err := os.Stat(filepath.Join(dst, strings.TrimPrefix(configs["skopeo"], "sha256:"))); err != nil {
			t.Errorf("skopeo copied no config blob: %v", err)
		}
	})

	t.Run("podman with a mirror", func(t *testing.T) {
		t.Parallel()
		podman := tool(t, "podman")
		image := "docker.io/library/podman:v1"
		run(t, mirrorEnv, podman, "pull", image)
		t.Cleanup(func() { _, _ = runErr(mirrorEnv, podman, "rmi", "-f", image) })
		if got := strings.TrimSpace(run(t, mirrorEnv, podman, "image", "inspect", "--format", "{{.Digest}}", image)); got != digests["podman"] {
			t.Errorf("podman pulled %s, want %s", got, digests["podman"])
		}
		if got := strings.TrimSpace(run(t, mirrorEnv, podman, "image", "inspect", "--format", "{{.Id}}", image)); "sha256:"+got != configs["podman"] {
			t.Errorf("podman image id %s, want %s", got, configs["podman"])
		}
	})

	t.Run("crane multi-platform index", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		run(t, nil, crane, "pull", "--insecure", "--format", "oci", h+"/hub/library/multi:v1", dir)
		raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
		if err != nil {
			t.Fatal(err)
		}
		var layout struct {
			Manifests []struct{ Digest string } `json:"manifests"`
		}
		if err := json.Unmarshal(raw, &layout); err != nil || len(layout.Manifests) != 1 || layout.Manifests[0].Digest != idxDigest.String() {
			t.Errorf("crane pulled %s, want the upstream's index %s", raw, idxDigest)
		}
		if got := strings.TrimSpace(run(t, nil, crane, "digest", "--insecure", h+"/hub/library/multi:v1")); got != idxDigest.String() {
			t.Errorf("crane digest through the cache %s, want %s", got, idxDigest)
		}
		im, _ := idx.IndexManifest()
		for _, m := range im.Manifests {
			blob := filepath.Join(dir, "blobs", "sha256", m.Digest.Hex)
			if _, err := os.Stat(blob); err != nil {
				t.Errorf("child %s (%s) not pulled: %v", m.Digest, m.Platform.Architecture, err)
			}
		}
	})
}

// startContainerd runs a containerd of the test's own (the machine's ctr
// talks to it) and returns its socket.
func startContainerd(t *testing.T) string {
	t.Helper()
	bin, ctr := tool(t, "containerd"), tool(t, "ctr")
	dir, err := os.MkdirTemp("", "ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "containerd.sock")
	cfg := filepath.Join(dir, "config.toml")
	writeFile(t, cfg, fmt.Sprintf(`version = 2
root = "%[1]s/root"
state = "%[1]s/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "%[2]s"
`, dir, sock))
	logs := &testenv.Buffer{}
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = os.RemoveAll(dir)
	})
	if !eventually(30*time.Second, func() bool {
		_, err := runErr(nil, ctr, "--address", sock, "version")
		return err == nil
	}) {
		t.Fatalf("containerd not answering after 30s:\n%s", logs.String())
	}
	return sock
}
