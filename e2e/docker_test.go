package e2e

import (
	"archive/tar"
	"bytes"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDocker drives the real docker CLI: an image made with docker import,
// pushed, removed locally and pulled back by digest.
// tarOf returns a tar archive of the given files.
func tarOf(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content))}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte(content))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDocker(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			testDocker(t, b)
		})
	}
}

func testDocker(t *testing.T, b backend) {
	docker := tool(t, "docker")
	if out, err := runErr(nil, docker, "info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Fatalf("docker engine not answering: %v\n%s", err, out)
	}
	reg := startRegistry(t, b.options(t, ""))
	image := reg.Addr + "/docker/hello:v1"

	// A one-file root filesystem, imported as an image.
	tarPath := filepath.Join(t.TempDir(), "rootfs.tar")
	writeRootfsTar(t, tarPath, "hello from portcullis "+reg.Addr+"\n")
	id := strings.TrimSpace(run(t, nil, docker, "import", tarPath, image))
	t.Cleanup(func() { _, _ = runErr(nil, docker, "rmi", "-f", image, id) })

	out := run(t, nil, docker, "push", image)
	m := regexp.MustCompile(`digest: (sha256:[0-9a-f]{64})`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("docker push printed no digest:\n%s", out)
	}
	pushed := m[1]
	if got := remoteDigest(t, image); got != pushed {
		t.Fatalf("registry has %s, docker pushed %s", got, pushed)
	}

	run(t, nil, docker, "rmi", "-f", image, id)
	byDigest := reg.Addr + "/docker/hello@" + pushed
	run(t, nil, docker, "pull", byDigest)
	t.Cleanup(func() { _, _ = runErr(nil, docker, "rmi", "-f", byDigest) })
	if got := strings.TrimSpace(run(t, nil, docker, "inspect", "--format", "{{.Id}}", byDigest)); got != id {
		t.Errorf("pulled image id %s, imported %s", got, id)
	}
	if out := run(t, nil, docker, "pull", image); !strings.Contains(out, pushed) {
		t.Errorf("pull by tag does not name the pushed digest:\n%s", out)
	}
	t.Cleanup(func() { _, _ = runErr(nil, docker, "rmi", "-f", image) })
}
