package scan

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// sharedVulnDB is the offline OSV test bundle beside the repository.
const sharedVulnDB = "../../shared/vulndb"

// entry is one tar entry of a crafted layer.
type entry struct {
	name     string
	body     string
	mode     int64 // 0 means 0o644 (0o755 for exec)
	typ      byte  // 0 means a regular file
	linkname string
}

func file(name, body string) entry { return entry{name: name, body: body} }
func exe(name, body string) entry  { return entry{name: name, body: body, mode: 0o755} }
func symlink(name, target string) entry {
	return entry{name: name, typ: tar.TypeSymlink, linkname: target}
}
func dir(name string) entry { return entry{name: name, typ: tar.TypeDir, mode: 0o755} }

// tarBytes builds an uncompressed tar stream.
func tarBytes(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Mode: e.mode, Typeflag: e.typ, Linkname: e.linkname, Format: tar.FormatPAX}
		if hdr.Typeflag == 0 {
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(e.body))
		}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// layerOf makes a layer from a tar stream (gzip-compressed or not).
func layerOf(t testing.TB, b []byte) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// imageOf stacks layers (lowest first) into a linux/amd64 image.
func imageOf(t testing.TB, layers ...[]byte) v1.Image {
	t.Helper()
	img := empty.Image
	for _, b := range layers {
		var err error
		if img, err = mutate.AppendLayers(img, layerOf(t, b)); err != nil {
			t.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// writeDockerTar writes img as a `docker save` style tarball and returns its path.
func writeDockerTar(t testing.TB, img v1.Image) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "image.tar")
	ref, err := name.ParseReference("portcullis.test/scan:fixture")
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(p, ref, img); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeLayoutDir writes img as an OCI image layout directory.
func writeLayoutDir(t testing.TB, img v1.Image) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	return dir
}

// writeLayoutTar writes img as a tar of an OCI image layout.
func writeLayoutTar(t testing.TB, img v1.Image) string {
	t.Helper()
	dir := writeLayoutDir(t, img)
	var entries []entry
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		entries = append(entries, file(filepath.ToSlash(rel), string(b)))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "layout.tar")
	if err := os.WriteFile(p, tarBytes(t, entries...), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// testVulnDB builds a bundle directory holding the shared bundle's archives and the
// test-only records of testdata/osv-extra, under both the osv/ and osv-scalibr/ layouts
// (the latter is what osv-scanner's --local-db-path reads).
func testVulnDB(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	shared, err := filepath.Glob(filepath.Join(sharedVulnDB, "osv", "*", "all.zip"))
	if err != nil || len(shared) == 0 {
		t.Fatalf("shared OSV bundle not found under %s", sharedVulnDB)
	}
	put := func(eco string, data []byte) {
		for _, top := range []string{"osv", "osv-scalibr"} {
			d := filepath.Join(dir, top, eco)
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d, "all.zip"), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, p := range shared {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		put(filepath.Base(filepath.Dir(p)), b)
	}
	extra, err := os.ReadDir("testdata/osv-extra")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range extra {
		if !e.IsDir() {
			continue
		}
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		recs, _ := filepath.Glob(filepath.Join("testdata/osv-extra", e.Name(), "*.json"))
		for _, r := range recs {
			b, err := os.ReadFile(r)
			if err != nil {
				t.Fatal(err)
			}
			w, err := zw.Create(filepath.Base(r))
			if err != nil {
				t.Fatal(err)
			}
			w.Write(b)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		put(e.Name(), buf.Bytes())
	}
	return dir
}

// goBinary builds testdata/goapp (which links golang.org/x/text v0.3.5) and rewrites the Go
// version in its build information to go1.26.5, so that the stdlib findings do not depend on
// the toolchain running the test. It needs the module from the module cache or proxy.
func goBinary(t testing.TB) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "goapp")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, ".")
	cmd.Dir = "testdata/goapp"
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=readonly -buildvcs=false", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build testdata/goapp: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	magic := []byte("\xff Go buildinf:")
	i := bytes.Index(b, magic)
	if i < 0 || len(b) < i+33 || b[i+15]&2 == 0 {
		t.Fatal("no inline build information in the test binary")
	}
	// A 32-byte header (14-byte magic, pointer size, flags, padding), then a varint length
	// and the version string.
	n := int(b[i+32])
	old := string(b[i+33 : i+33+n])
	const want = "go1.26.5"
	if !strings.HasPrefix(old, "go1.") || len(old) != len(want) {
		t.Fatalf("toolchain version %q cannot be rewritten in place to %s; update goBinary", old, want)
	}
	copy(b[i+33:], want)
	return b
}
