package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"go.yaml.in/yaml/v3"
)

// TestImage builds the container image with scripts/image.sh --multiarch,
// runs it as a production deployment would (read-only root filesystem,
// /tmp on a tmpfs, /data on a volume, a configuration mounted), pushes and
// pulls through it with crane, restarts it on the same volume, pushes the
// multi-platform OCI layout the script wrote into it, and runs it as the
// Helm chart's pod.
func TestImage(t *testing.T) {
	t.Parallel()
	docker := tool(t, "docker")
	crane := tool(t, "crane")
	if out, err := runErr(nil, docker, "info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Fatalf("docker engine not answering: %v\n%s", err, out)
	}
	suffix := fmt.Sprintf("%d", time.Now().UnixNano())
	tag := "portcullis:e2e-" + suffix
	oci := filepath.Join(t.TempDir(), "oci")

	// A cold build compiles the registry twice (amd64 and arm64).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "scripts/image.sh", "--multiarch", "--oci", oci, tag)
	build.Dir = ".."
	out, err := build.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/image.sh: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = runErr(nil, docker, "rmi", "-f", tag) })
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); lines[len(lines)-1] != tag {
		t.Errorf("scripts/image.sh did not end with the tag:\n%s", out)
	}

	var inspected []struct {
		Os, Architecture string
		Config           v1.Config
	}
	if err := json.Unmarshal([]byte(run(t, nil, docker, "image", "inspect", tag)), &inspected); err != nil || len(inspected) != 1 {
		t.Fatalf("docker image inspect %s: %v", tag, err)
	}
	img := inspected[0]
	want := v1.Config{
		User:         "65532:65532",
		Entrypoint:   []string{"/usr/bin/registry"},
		Cmd:          []string{"serve", "--config", "/etc/portcullis/config.yml"},
		WorkingDir:   "/data",
		Volumes:      map[string]struct{}{"/data": {}, "/tmp": {}},
		ExposedPorts: map[string]struct{}{"5000/tcp": {}},
	}
	if diff := cmp.Diff(want, contract(img.Config)); diff != "" {
		t.Errorf("image configuration (-want +got):\n%s", diff)
	}

	// The entrypoint is the binary: a command runs in place of serve.
	if got := run(t, nil, docker, "run", "--rm", "--read-only", tag, "version"); !strings.HasPrefix(got, "portcullis ") {
		t.Errorf("docker run IMAGE version printed %q", got)
	}

	cfgDir := t.TempDir()
	if err := os.Chmod(cfgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(cfgDir, "config.yml")
	// --addr and --data override these: were they ignored, nothing would
	// answer on the published port, and the data would go to the tmpfs.
	writeFile(t, cfg, "version: 1\ndataDir: /tmp/data\nhttp:\n  addr: 127.0.0.1:5001\n  shutdownGrace: 5s\nlog:\n  level: info\n")
	if err := os.Chmod(cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	vol := "portcullis-e2e-" + suffix
	run(t, nil, docker, "volume", "create", vol)
	t.Cleanup(func() { _, _ = runErr(nil, docker, "volume", "rm", "-f", vol) })

	// start runs the image with the given docker run flags and command.
	start := func(flags []string, command ...string) (id, addr string) {
		t.Helper()
		args := append(append([]string{"run", "-d", "--read-only", "--tmpfs", "/tmp", "-p", "127.0.0.1::5000"}, flags...), tag)
		id = strings.TrimSpace(run(t, nil, docker, append(args, command...)...))
		t.Cleanup(func() { _, _ = runErr(nil, docker, "rm", "-f", id) })
		addr = strings.TrimSpace(strings.Split(run(t, nil, docker, "port", id, "5000/tcp"), "\n")[0])
		ready := eventually(60*time.Second, func() bool {
			resp, err := http.Get("http://" + addr + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
		if !ready {
			logs, _ := exec.Command(docker, "logs", id).CombinedOutput()
			t.Fatalf("container not ready within 60s:\n%s", logs)
		}
		return id, addr
	}

	mounted := []string{"-v", vol + ":/data", "-v", cfg + ":/etc/portcullis/config.yml:ro"}
	serve := []string{"serve", "--config", "/etc/portcullis/config.yml", "--addr", ":5000", "--data", "/data"}

	// The default command serves the configuration the image carries.
	id, _ := start(nil)
	run(t, nil, docker, "rm", "-f", id)

	id, addr := start(append(mounted, "--user", "65532"), serve...)
	if uid := processUID(t, docker, id); uid != "65532" {
		t.Errorf("the registry runs as uid %s, want 65532", uid)
	}

	// Push and pull through the container with crane.
	pushed, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(t.TempDir(), "img.tar")
	if err := tarball.WriteToFile(tarPath, ref(t, addr+"/image/app:v1"), pushed); err != nil {
		t.Fatal(err)
	}
	run(t, nil, crane, "push", "--insecure", tarPath, addr+"/image/app:v1")
	wantDigest := imageDigest(t, pushed)
	pulled := filepath.Join(t.TempDir(), "pulled.tar")
	run(t, nil, crane, "pull", "--insecure", addr+"/image/app:v1", pulled)
	got, err := tarball.ImageFromPath(pulled, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := imageDigest(t, got); d != wantDigest {
		t.Errorf("pulled %s, pushed %s", d, wantDigest)
	}

	// SIGTERM: a clean exit within the shutdown grace.
	run(t, nil, docker, "stop", "--time", "30", id)
	if code := strings.TrimSpace(run(t, nil, docker, "inspect", "--format", "{{.State.ExitCode}}", id)); code != "0" {
		logs, _ := exec.Command(docker, "logs", id).CombinedOutput()
		t.Errorf("exit code %s after docker stop\n%s", code, logs)
	}

	// Again on the same volume, as the image's own user: the data is there.
	id, addr = start(mounted, serve...)
	if uid := processUID(t, docker, id); uid != "65532" {
		t.Errorf("by default the registry runs as uid %s, want 65532", uid)
	}
	if d := strings.TrimSpace(run(t, nil, crane, "digest", "--insecure", addr+"/image/app:v1")); d != wantDigest {
		t.Errorf("after a restart the tag names %s, want %s", d, wantDigest)
	}

	// The multi-platform layout: one index of linux/amd64 and linux/arm64,
	// configured as the image Docker built.
	p, err := layout.FromPath(oci)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var platforms []string
	for _, m := range im.Manifests {
		platforms = append(platforms, m.Platform.String())
		if m.Platform.Architecture != img.Architecture {
			continue
		}
		child, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := child.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(contract(img.Config), contract(cf.Config)); diff != "" {
			t.Errorf("layout's %s image differs from Docker's (-docker +layout):\n%s", m.Platform, diff)
		}
		if diff := cmp.Diff(img.Config.Env, cf.Config.Env); diff != "" {
			t.Errorf("layout's %s environment differs from Docker's (-docker +layout):\n%s", m.Platform, diff)
		}
	}
	if diff := cmp.Diff([]string{"linux/amd64", "linux/arm64"}, platforms); diff != "" {
		t.Errorf("layout platforms (-want +got):\n%s", diff)
	}
	run(t, nil, crane, "push", "--insecure", "--index", oci, addr+"/portcullis/registry:multi")
	idxDigest, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(run(t, nil, crane, "digest", "--insecure", addr+"/portcullis/registry:multi")); got != idxDigest.String() {
		t.Errorf("the pushed index is %s, the layout's %s", got, idxDigest)
	}
	for _, m := range im.Manifests {
		ref := addr + "/portcullis/registry@" + m.Digest.String()
		if got := strings.TrimSpace(run(t, nil, crane, "digest", "--insecure", ref)); got != m.Digest.String() {
			t.Errorf("%s: the registry answers %s", ref, got)
		}
	}

	t.Run("chart pod", func(t *testing.T) { testChartPod(t, docker, crane, tag) })
}

// contract returns the parts of an image configuration that deployments
// rely on.
func contract(c v1.Config) v1.Config {
	return v1.Config{User: c.User, Entrypoint: c.Entrypoint, Cmd: c.Cmd, WorkingDir: c.WorkingDir,
		Volumes: c.Volumes, ExposedPorts: c.ExposedPorts}
}

// processUID returns the real uid of a container's main process, read from
// /proc on the host.
func processUID(t *testing.T, docker, id string) string {
	t.Helper()
	pid := strings.TrimSpace(run(t, nil, docker, "inspect", "--format", "{{.State.Pid}}", id))
	f, err := os.Open(filepath.Join("/proc", pid, "status"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fields := strings.Fields(s.Text()); len(fields) > 1 && fields[0] == "Uid:" {
			return fields[1]
		}
	}
	t.Fatalf("no Uid line in /proc/%s/status", pid)
	return ""
}

// renderedPod is what the chart renders for the registry's pod: its
// configuration, the Secrets it makes and how the pod mounts them.
type renderedPod struct {
	config  string
	secrets map[string]map[string]string // name -> key -> decoded value
	args    []string
	mounts  []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
	}
	volumes []struct {
		Name   string `yaml:"name"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
			Items      []struct {
				Key  string `yaml:"key"`
				Path string `yaml:"path"`
			} `yaml:"items"`
		} `yaml:"secret"`
	}
	runAsUser int
}

func renderPod(t *testing.T, manifests string) renderedPod {
	t.Helper()
	p := renderedPod{secrets: map[string]map[string]string{}}
	dec := yaml.NewDecoder(strings.NewReader(manifests))
	for {
		var doc struct {
			Kind     string                `yaml:"kind"`
			Metadata struct{ Name string } `yaml:"metadata"`
			Data     map[string]string     `yaml:"data"`
			Spec     struct {
				Template struct {
					Spec struct {
						SecurityContext struct {
							RunAsUser int `yaml:"runAsUser"`
						} `yaml:"securityContext"`
						Containers []struct {
							Args         []string    `yaml:"args"`
							VolumeMounts []yaml.Node `yaml:"volumeMounts"`
						} `yaml:"containers"`
						Volumes yaml.Node `yaml:"volumes"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch doc.Kind {
		case "ConfigMap":
			p.config = doc.Data["config.yml"]
		case "Secret":
			data := map[string]string{}
			for k, v := range doc.Data {
				b, err := base64.StdEncoding.DecodeString(v)
				if err != nil {
					t.Fatal(err)
				}
				data[k] = string(b)
			}
			p.secrets[doc.Metadata.Name] = data
		case "Deployment", "StatefulSet":
			spec := doc.Spec.Template.Spec
			p.runAsUser = spec.SecurityContext.RunAsUser
			p.args = spec.Containers[0].Args
			for _, n := range spec.Containers[0].VolumeMounts {
				var m struct {
					Name      string `yaml:"name"`
					MountPath string `yaml:"mountPath"`
					SubPath   string `yaml:"subPath"`
				}
				if err := n.Decode(&m); err != nil {
					t.Fatal(err)
				}
				p.mounts = append(p.mounts, m)
			}
			if err := spec.Volumes.Decode(&p.volumes); err != nil {
				t.Fatal(err)
			}
		}
	}
	return p
}

// testChartPod runs the image as the chart's pod would run it: the
// rendered configuration, the chart-made Secrets mounted where the pod
// mounts them, its user, its command, a read-only root filesystem with
// /tmp and the data directory on volumes. A login with a password from a
// Secret, a token signed with a key from a Secret and a chunked upload
// signed with the upload secret then push an image.
func testChartPod(t *testing.T, docker, crane, tag string) {
	helm := tool(t, "helm")
	chart, _ := filepath.Abs("../charts/portcullis")
	dir := t.TempDir()
	key := filepath.Join(dir, "signing.pem")
	run(t, nil, registryBin, "auth", "keygen", key)
	// Clients reach the token endpoint at the published port.
	addr := freeAddr(t)
	out := run(t, nil, helm, "template", "reg", chart,
		"--set", "persistence.enabled=false",
		"--set", "config.auth.token.realm=http://"+addr+"/token",
		"--set", "config.auth.enabled=true",
		"--set", "config.auth.users[0].name=ci",
		"--set", "config.auth.rules[0].name=ci",
		"--set", "config.auth.rules[0].subjects[0]=user:ci",
		"--set", "config.auth.rules[0].repositories[0]=team/**",
		"--set", "config.auth.rules[0].actions={pull,push}",
		"--set", "secrets.users.passwords.ci=correct-horse",
		"--set-file", `secrets.token.files.signing\.pem=`+key,
		"--set", "secrets.upload.value=0123456789abcdef0123")
	pod := renderPod(t, out)
	if pod.config == "" || len(pod.args) == 0 || pod.runAsUser == 0 {
		t.Fatalf("no pod in the rendering:\n%s", out)
	}

	args := []string{"run", "-d", "--read-only", "-p", addr + ":5000", "--user", fmt.Sprintf("%d:%d", pod.runAsUser, pod.runAsUser)}
	volumes := map[string]string{} // volume name -> host directory
	for _, v := range pod.volumes {
		if v.Secret == nil {
			continue
		}
		data, ok := pod.secrets[v.Secret.SecretName]
		if !ok {
			t.Fatalf("volume %s: the chart made no Secret %s", v.Name, v.Secret.SecretName)
		}
		host := filepath.Join(dir, v.Name)
		if err := os.Mkdir(host, 0o755); err != nil {
			t.Fatal(err)
		}
		files := map[string]string{}
		for k, val := range data {
			files[k] = val
		}
		if len(v.Secret.Items) > 0 {
			files = map[string]string{}
			for _, it := range v.Secret.Items {
				files[it.Path] = data[it.Key]
			}
		}
		for name, val := range files {
			writeFile(t, filepath.Join(host, name), val)
			if err := os.Chmod(filepath.Join(host, name), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		volumes[v.Name] = host
	}
	cfg := filepath.Join(dir, "config.yml")
	writeFile(t, cfg, pod.config)
	if err := os.Chmod(cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, m := range pod.mounts {
		switch {
		case m.Name == "config":
			args = append(args, "-v", cfg+":"+m.MountPath+":ro")
		case volumes[m.Name] != "":
			args = append(args, "-v", volumes[m.Name]+":"+m.MountPath+":ro")
		default: // emptyDir
			args = append(args, "--tmpfs", m.MountPath+":mode=1777")
		}
	}
	id := strings.TrimSpace(run(t, nil, docker, append(append(args, tag), pod.args...)...))
	t.Cleanup(func() { _, _ = runErr(nil, docker, "rm", "-f", id) })
	ready := eventually(60*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if !ready {
		logs, _ := exec.Command(docker, "logs", id).CombinedOutput()
		t.Fatalf("the chart's pod is not ready within 60s:\n%s\n%s", logs, pod.config)
	}

	env := []string{"DOCKER_CONFIG=" + t.TempDir()}
	img, err := random.Image(1024, 3)
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(t.TempDir(), "img.tar")
	writeTarball(t, tarPath, img)
	if out, err := runErr(env, crane, "push", "--insecure", tarPath, addr+"/team/app:v1"); err == nil {
		t.Errorf("anonymous push accepted: %s", out)
	}
	run(t, env, crane, "auth", "login", "--insecure", addr, "-u", "ci", "-p", "correct-horse")
	run(t, env, crane, "push", "--insecure", tarPath, addr+"/team/app:v1")
	if got := strings.TrimSpace(run(t, env, crane, "digest", "--insecure", addr+"/team/app:v1")); got != imageDigest(t, img) {
		t.Errorf("the chart's pod holds %s, pushed %s", got, imageDigest(t, img))
	}
}
