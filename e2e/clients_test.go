package e2e

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/opencontainers/go-digest"
)

func ref(t testing.TB, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// remoteDigest asks the registry (not the client under test) for a digest.
func remoteDigest(t testing.TB, s string) string {
	t.Helper()
	desc, err := remote.Head(ref(t, s))
	if err != nil {
		t.Fatalf("HEAD %s: %v", s, err)
	}
	return desc.Digest.String()
}

func imageDigest(t testing.TB, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func TestCrane(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			testCrane(t, b)
		})
	}
}

func testCrane(t *testing.T, b backend) {
	crane := tool(t, "crane")
	reg := startRegistry(t, b.options(t, ""))
	h := reg.Addr

	// push: a tarball made here, pushed by crane; the registry holds the
	// same manifest, byte for byte.
	img, err := random.Image(4096, 3)
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(t.TempDir(), "img.tar")
	if err := tarball.WriteToFile(tarPath, ref(t, h+"/crane/app:v1"), img); err != nil {
		t.Fatal(err)
	}
	out := run(t, nil, crane, "push", "--insecure", tarPath, h+"/crane/app:v1")
	want := imageDigest(t, img)
	if !strings.Contains(out, want) || remoteDigest(t, h+"/crane/app:v1") != want {
		t.Fatalf("crane push: printed %q, want digest %s", out, want)
	}
	rawWant, _ := img.RawManifest()
	rawGot := run(t, nil, crane, "manifest", "--insecure", h+"/crane/app:v1")
	if rawGot != string(rawWant) {
		t.Errorf("manifest differs from the pushed bytes")
	}

	// copy a multi-platform index between repositories.
	idx, err := random.Index(1024, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref(t, h+"/crane/src:multi"), idx); err != nil {
		t.Fatal(err)
	}
	run(t, nil, crane, "copy", "--insecure", h+"/crane/src:multi", h+"/crane/dst:multi")
	idxDigest, _ := idx.Digest()
	if got := strings.TrimSpace(run(t, nil, crane, "digest", "--insecure", h+"/crane/dst:multi")); got != idxDigest.String() {
		t.Errorf("copied index digest %s, want %s", got, idxDigest)
	}
	im, _ := idx.IndexManifest()
	for _, m := range im.Manifests {
		if got := remoteDigest(t, h+"/crane/dst@"+m.Digest.String()); got != m.Digest.String() {
			t.Errorf("child %s missing after copy", m.Digest)
		}
	}

	// tag, list, catalog, delete.
	run(t, nil, crane, "tag", "--insecure", h+"/crane/app:v1", "stable")
	if got := run(t, nil, crane, "ls", "--insecure", h+"/crane/app"); got != "stable\nv1\n" {
		t.Errorf("crane ls = %q", got)
	}
	if got := run(t, nil, crane, "catalog", "--insecure", h); got != "crane/app\ncrane/dst\ncrane/src\n" {
		t.Errorf("crane catalog = %q", got)
	}
	run(t, nil, crane, "delete", "--insecure", h+"/crane/app@"+want)
	if out, err := runErr(nil, crane, "manifest", "--insecure", h+"/crane/app:v1"); err == nil {
		t.Errorf("manifest still served after delete: %s", out)
	}
}

func TestOras(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			testOras(t, b)
		})
	}
}

func testOras(t *testing.T, b backend) {
	oras := tool(t, "oras")
	reg := startRegistry(t, b.options(t, ""))
	h := reg.Addr
	work := t.TempDir()
	writeFile(t, filepath.Join(work, "config.json"), `{"hello":"world"}`)
	writeFile(t, filepath.Join(work, "sbom.spdx"), `{"spdxVersion":"SPDX-2.3"}`)

	runIn(t, work, oras, "push", "--plain-http", "--artifact-type", "application/vnd.example.config",
		h+"/oras/art:v1", "config.json:application/json")
	runIn(t, work, oras, "attach", "--plain-http", "--artifact-type", "application/spdx+json",
		h+"/oras/art:v1", "sbom.spdx:application/spdx+json")

	var discovered struct {
		Referrers []struct {
			Digest       string `json:"digest"`
			ArtifactType string `json:"artifactType"`
		} `json:"referrers"`
	}
	out := run(t, nil, oras, "discover", "--plain-http", "--format", "json", h+"/oras/art:v1")
	if err := json.Unmarshal([]byte(out), &discovered); err != nil {
		t.Fatalf("oras discover output: %v\n%s", err, out)
	}
	if len(discovered.Referrers) != 1 || discovered.Referrers[0].ArtifactType != "application/spdx+json" {
		t.Fatalf("oras discover = %+v", discovered.Referrers)
	}
	// The referrer is a real manifest in the registry.
	if got := remoteDigest(t, h+"/oras/art@"+discovered.Referrers[0].Digest); got != discovered.Referrers[0].Digest {
		t.Errorf("referrer %s not in the registry", discovered.Referrers[0].Digest)
	}

	pulled := filepath.Join(work, "out")
	run(t, nil, oras, "pull", "--plain-http", "-o", pulled, h+"/oras/art:v1")
	got, err := os.ReadFile(filepath.Join(pulled, "config.json"))
	if err != nil || string(got) != `{"hello":"world"}` {
		t.Errorf("oras pull: %q, %v", got, err)
	}
}

func TestRegctl(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			testRegctl(t, b)
		})
	}
}

func testRegctl(t *testing.T, b backend) {
	regctl := tool(t, "regctl")
	reg := startRegistry(t, b.options(t, ""))
	h := reg.Addr
	env := []string{"HOME=" + t.TempDir()}
	run(t, env, regctl, "registry", "set", "--tls", "disabled", h)

	idx, _ := random.Index(2048, 1, 2)
	if err := remote.WriteIndex(ref(t, h+"/regctl/src:multi"), idx); err != nil {
		t.Fatal(err)
	}
	run(t, env, regctl, "image", "copy", h+"/regctl/src:multi", h+"/regctl/dst:multi")
	idxDigest, _ := idx.Digest()
	if got := strings.TrimSpace(run(t, env, regctl, "image", "digest", h+"/regctl/dst:multi")); got != idxDigest.String() {
		t.Errorf("regctl copy: digest %s, want %s", got, idxDigest)
	}

	// A referrer pushed with regctl, listed by regctl through the API.
	work := t.TempDir()
	writeFile(t, filepath.Join(work, "note.txt"), "reviewed")
	run(t, env, regctl, "artifact", "put", "--subject", h+"/regctl/dst:multi", "--artifact-type", "application/vnd.example.note",
		"--file", filepath.Join(work, "note.txt"), "--file-media-type", "text/plain")
	out := run(t, env, regctl, "artifact", "list", h+"/regctl/dst:multi", "--format", "{{jsonPretty .Manifest}}")
	if !strings.Contains(out, "application/vnd.example.note") {
		t.Errorf("regctl artifact list: %s", out)
	}
	// The same through the raw referrers response, served by the API (not the tag fallback).
	body := run(t, env, regctl, "artifact", "list", h+"/regctl/dst:multi", "--format", "body")
	if !strings.Contains(body, "application/vnd.oci.image.index.v1+json") || !strings.Contains(body, "application/vnd.example.note") {
		t.Errorf("referrers body: %s", body)
	}
}

func TestSkopeoAndPodman(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			testSkopeoAndPodman(t, b)
		})
	}
}

func testSkopeoAndPodman(t *testing.T, b backend) {
	skopeo := tool(t, "skopeo")
	podman := tool(t, "podman")
	reg := startRegistry(t, b.options(t, ""))
	h := reg.Addr

	// An OCI layout made here, copied into the registry by skopeo.
	img, _ := random.Image(8192, 2)
	src := filepath.Join(t.TempDir(), "src")
	p, err := layout.Write(src, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	want := imageDigest(t, img)
	run(t, nil, skopeo, "copy", "--dest-tls-verify=false", "oci:"+src, "docker://"+h+"/skopeo/app:v1")
	if got := remoteDigest(t, h+"/skopeo/app:v1"); got != want {
		t.Fatalf("skopeo push: registry has %s, want %s", got, want)
	}
	// And back out to a directory, byte for byte.
	dst := filepath.Join(t.TempDir(), "dst")
	run(t, nil, skopeo, "copy", "--src-tls-verify=false", "docker://"+h+"/skopeo/app:v1", "dir:"+dst)
	raw, err := os.ReadFile(filepath.Join(dst, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got := digest.FromBytes(raw).String(); got != want {
		t.Errorf("skopeo pull: manifest %s, want %s", got, want)
	}
	for _, l := range mustLayers(t, img) {
		d, _ := l.Digest()
		b, err := os.ReadFile(filepath.Join(dst, d.Hex))
		if err != nil || digest.FromBytes(b).String() != d.String() {
			t.Errorf("skopeo pull: layer %s missing or corrupt: %v", d, err)
		}
	}

	// podman pulls it, pushes it elsewhere; the registry holds what podman
	// says it pushed, and the image id (config digest) is unchanged.
	run(t, nil, podman, "pull", "--tls-verify=false", h+"/skopeo/app:v1")
	t.Cleanup(func() { _, _ = runErr(nil, podman, "rmi", "-f", h+"/skopeo/app:v1", h+"/podman/app:v2") })
	run(t, nil, podman, "tag", h+"/skopeo/app:v1", h+"/podman/app:v2")
	digestFile := filepath.Join(t.TempDir(), "digest")
	run(t, nil, podman, "push", "--tls-verify=false", "--digestfile", digestFile, h+"/podman/app:v2")
	pushed, _ := os.ReadFile(digestFile)
	if got := remoteDigest(t, h+"/podman/app:v2"); got != strings.TrimSpace(string(pushed)) {
		t.Errorf("podman push: registry has %s, podman pushed %s", got, pushed)
	}
	cfg, _ := img.ConfigName()
	pulled, err := remote.Image(ref(t, h+"/podman/app:v2"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := pulled.ConfigName(); got != cfg {
		t.Errorf("podman round trip changed the image id: %s, want %s", got, cfg)
	}
}

func mustLayers(t testing.TB, img v1.Image) []v1.Layer {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeTarball(t testing.TB, path string, img v1.Image) {
	t.Helper()
	if err := tarball.WriteToFile(path, ref(t, "example.invalid/x:y"), img); err != nil {
		t.Fatal(err)
	}
}

func errorsAs(err error, target any) bool { return err != nil && errors.As(err, target) }
