// Command ociimage writes a multi-platform OCI image layout of the registry
// from build contexts that scripts/image.sh prepares, one per platform: the
// same files and image configuration as the Dockerfile, assembled without a
// Docker engine, so that one index can hold linux/amd64 and linux/arm64.
//
//	ociimage --out DIR [--version V] [--revision R] OS/ARCH=CONTEXT...
//
// A context holds registry (the binary, installed as /usr/bin/registry),
// rootfs/ (copied to / as root) and data/ (copied to /data, owned by
// 65532:65532). Files get the time in SOURCE_DATE_EPOCH (default 0), so two
// runs over the same inputs write the same digests. The layout's index.json
// is the image index itself, one manifest per platform; push it with
// `crane push --index DIR REF`.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// User is the uid and gid the image runs as and that owns /data.
const user = 65532

func main() {
	if err := run(os.Args[1:], os.Getenv("SOURCE_DATE_EPOCH"), os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "ociimage:", err)
		os.Exit(1)
	}
}

func run(args []string, epoch string, stderr io.Writer) error {
	fset := flag.NewFlagSet("ociimage", flag.ContinueOnError)
	fset.SetOutput(stderr)
	out := fset.String("out", "", "the OCI layout directory to write (replaced if it exists)")
	version := fset.String("version", "dev", "org.opencontainers.image.version")
	revision := fset.String("revision", "unknown", "org.opencontainers.image.revision")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if *out == "" || fset.NArg() == 0 {
		return errors.New("usage: ociimage --out DIR OS/ARCH=CONTEXT...")
	}
	mtime := time.Unix(0, 0).UTC()
	if epoch != "" {
		sec, err := strconv.ParseInt(epoch, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
		}
		mtime = time.Unix(sec, 0).UTC()
	}
	labels := map[string]string{
		"org.opencontainers.image.title":       "Portcullis",
		"org.opencontainers.image.description": "A private OCI container registry that lets only trusted images through.",
		"org.opencontainers.image.version":     *version,
		"org.opencontainers.image.revision":    *revision,
	}
	var idx v1.ImageIndex = empty.Index
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	for _, arg := range fset.Args() {
		platform, dir, ok := strings.Cut(arg, "=")
		osName, arch, ok2 := strings.Cut(platform, "/")
		if !ok || !ok2 || osName == "" || arch == "" || dir == "" {
			return fmt.Errorf("%q: want OS/ARCH=CONTEXT", arg)
		}
		img, err := image(dir, osName, arch, mtime, labels)
		if err != nil {
			return fmt.Errorf("%s: %w", platform, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: osName, Architecture: arch}},
		})
	}
	idx = mutate.Annotations(idx, labels).(v1.ImageIndex)
	if err := os.RemoveAll(*out); err != nil {
		return err
	}
	if _, err := layout.Write(*out, idx); err != nil {
		return fmt.Errorf("write layout: %w", err)
	}
	return nil
}

// image builds one platform's image from a build context, configured as
// the Dockerfile configures it.
func image(dir, osName, arch string, mtime time.Time, labels map[string]string) (v1.Image, error) {
	layerTar, err := rootfs(dir, mtime)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: mtime}, CreatedBy: "scripts/image.sh --multiarch", Comment: "registry, CA bundle, user 65532",
	}})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = osName, arch, v1.Time{Time: mtime}
	cf.Config = v1.Config{
		User:         fmt.Sprintf("%d:%d", user, user),
		Env:          []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
		Entrypoint:   []string{"/usr/bin/registry"},
		Cmd:          []string{"serve", "--config", "/etc/portcullis/config.yml"},
		WorkingDir:   "/data",
		Volumes:      map[string]struct{}{"/data": {}, "/tmp": {}},
		ExposedPorts: map[string]struct{}{"5000/tcp": {}},
		Labels:       labels,
	}
	return mutate.ConfigFile(img, cf)
}

// rootfs returns the image's one layer: the context's rootfs/ at /, data/
// at /data owned by the user, and the binary at /usr/bin/registry.
func rootfs(dir string, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	seen := map[string]bool{}
	add := func(name string, fi fs.FileInfo, owner int, src string) error {
		h := &tar.Header{Name: name, Mode: int64(fi.Mode().Perm()), ModTime: mtime, Uid: owner, Gid: owner, Format: tar.FormatPAX}
		if fi.Mode()&fs.ModeSticky != 0 {
			h.Mode |= 0o1000
		}
		switch {
		case fi.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, name+"/"
		case fi.Mode().IsRegular():
			h.Typeflag, h.Size = tar.TypeReg, fi.Size()
		default:
			return fmt.Errorf("%s: only files and directories may go into the image", src)
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		seen[name] = true
		if h.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	}
	// tree adds src's contents below the image path at, owned by owner.
	tree := func(src, at string, owner int) error {
		return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(src, p)
			if err != nil {
				return err
			}
			if rel == "." {
				return nil
			}
			name := path.Join(at, filepath.ToSlash(rel))
			fi, err := d.Info()
			if err != nil {
				return err
			}
			return add(name, fi, owner, p)
		})
	}
	if err := tree(filepath.Join(dir, "rootfs"), ".", 0); err != nil {
		return nil, fmt.Errorf("rootfs: %w", err)
	}
	data, err := os.Stat(filepath.Join(dir, "data"))
	if err != nil {
		return nil, err
	}
	if err := add("data", data, user, filepath.Join(dir, "data")); err != nil {
		return nil, err
	}
	if err := tree(filepath.Join(dir, "data"), "data", user); err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	bin := filepath.Join(dir, "registry")
	fi, err := os.Stat(bin)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"usr", "usr/bin"} {
		if !seen[d] {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
				return nil, err
			}
		}
	}
	if err := add("usr/bin/registry", fi, 0, bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
