package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// buildContext writes a context as scripts/image.sh does, with a fake
// binary whose content names the platform.
func buildContext(t *testing.T, arch string) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"rootfs/etc/ssl/certs", "rootfs/tmp", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "rootfs/tmp"), 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"registry":          "binary for " + arch,
		"rootfs/etc/passwd": "portcullis:x:65532:65532::/data:/sbin/nologin\n",
		"rootfs/etc/ssl/certs/ca-certificates.crt": "certs\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type entry struct {
	Mode     int64
	Uid      int
	Content  string
	Unixtime int64
}

func TestRun(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "oci")
	args := []string{"--out", out, "--version", "v1.2.3",
		"linux/amd64=" + buildContext(t, "amd64"), "linux/arm64=" + buildContext(t, "arm64")}
	if err := run(args, "1700000000", io.Discard); err != nil {
		t.Fatal(err)
	}
	p, err := layout.FromPath(out)
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
	if im.MediaType != "application/vnd.oci.image.index.v1+json" || im.Annotations["org.opencontainers.image.version"] != "v1.2.3" {
		t.Errorf("index media type %s, annotations %v", im.MediaType, im.Annotations)
	}
	var platforms []string
	for _, d := range im.Manifests {
		platforms = append(platforms, d.Platform.String())
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS+"/"+cf.Architecture != d.Platform.String() {
			t.Errorf("%s: config says %s/%s", d.Platform, cf.OS, cf.Architecture)
		}
		wantCfg := v1.Config{
			User:         "65532:65532",
			Entrypoint:   []string{"/usr/bin/registry"},
			Cmd:          []string{"serve", "--config", "/etc/portcullis/config.yml"},
			WorkingDir:   "/data",
			Volumes:      map[string]struct{}{"/data": {}, "/tmp": {}},
			ExposedPorts: map[string]struct{}{"5000/tcp": {}},
		}
		got := v1.Config{User: cf.Config.User, Entrypoint: cf.Config.Entrypoint, Cmd: cf.Config.Cmd,
			WorkingDir: cf.Config.WorkingDir, Volumes: cf.Config.Volumes, ExposedPorts: cf.Config.ExposedPorts}
		if diff := cmp.Diff(wantCfg, got); diff != "" {
			t.Errorf("%s: config (-want +got):\n%s", d.Platform, diff)
		}
		if v := cf.Config.Labels["org.opencontainers.image.version"]; v != "v1.2.3" {
			t.Errorf("%s: version label %q", d.Platform, v)
		}
		layers, err := img.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("%s: layers %d, %v", d.Platform, len(layers), err)
		}
		rc, err := layers[0].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		got2 := readTar(t, rc)
		want := map[string]entry{
			"etc/":                              {Mode: 0o755},
			"etc/passwd":                        {Mode: 0o644, Content: "portcullis:x:65532:65532::/data:/sbin/nologin\n"},
			"etc/ssl/":                          {Mode: 0o755},
			"etc/ssl/certs/":                    {Mode: 0o755},
			"etc/ssl/certs/ca-certificates.crt": {Mode: 0o644, Content: "certs\n"},
			"tmp/":                              {Mode: 0o1777},
			"data/":                             {Mode: 0o755, Uid: 65532},
			"usr/":                              {Mode: 0o755},
			"usr/bin/":                          {Mode: 0o755},
			"usr/bin/registry":                  {Mode: 0o644, Content: "binary for " + d.Platform.Architecture},
		}
		for k, v := range want {
			v.Unixtime = 1700000000
			want[k] = v
		}
		if diff := cmp.Diff(want, got2); diff != "" {
			t.Errorf("%s: layer (-want +got):\n%s", d.Platform, diff)
		}
	}
	if diff := cmp.Diff([]string{"linux/amd64", "linux/arm64"}, platforms); diff != "" {
		t.Errorf("platforms (-want +got):\n%s", diff)
	}

	// The same inputs give the same digests.
	again := filepath.Join(t.TempDir(), "oci")
	args[1] = again
	if err := run(args, "1700000000", io.Discard); err != nil {
		t.Fatal(err)
	}
	p2, err := layout.FromPath(again)
	if err != nil {
		t.Fatal(err)
	}
	idx2, err := p2.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := idx.Digest()
	d2, err := idx2.Digest()
	if err != nil || d1 != d2 {
		t.Errorf("a second run wrote %s (%v), the first %s", d2, err, d1)
	}
}

func readTar(t *testing.T, r io.ReadCloser) map[string]entry {
	t.Helper()
	defer r.Close()
	got := map[string]entry{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if _, err := io.Copy(&b, tr); err != nil {
			t.Fatal(err)
		}
		if _, dup := got[h.Name]; dup {
			t.Errorf("%s twice in the layer", h.Name)
		}
		got[h.Name] = entry{Mode: h.Mode, Uid: h.Uid, Content: b.String(), Unixtime: h.ModTime.Unix()}
	}
}

func TestRunRefuses(t *testing.T) {
	t.Parallel()
	ctx := buildContext(t, "amd64")
	for name, args := range map[string][]string{
		"no out":          {"linux/amd64=" + ctx},
		"no platform":     {"--out", filepath.Join(t.TempDir(), "o")},
		"bad platform":    {"--out", filepath.Join(t.TempDir(), "o"), "amd64=" + ctx},
		"missing context": {"--out", filepath.Join(t.TempDir(), "o"), "linux/amd64=" + filepath.Join(t.TempDir(), "none")},
	} {
		if err := run(args, "", io.Discard); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if err := run([]string{"--out", filepath.Join(t.TempDir(), "o"), "linux/amd64=" + ctx}, "soon", io.Discard); err == nil {
		t.Error("a bad SOURCE_DATE_EPOCH was accepted")
	}
}
