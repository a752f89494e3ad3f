package scan

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ErrArchive is returned (wrapped with the reason) by OpenArchive when the path is not a
// usable image archive.
var ErrArchive = errors.New("unusable image archive")

// Archive is an image read from a file or directory.
type Archive struct {
	Image v1.Image
	// Digest is the manifest digest when the archive preserves the manifest (OCI layout);
	// "" for docker save tarballs, which keep only the config.
	Digest string

	cleanup func() error
}

// Close removes the temporary files the archive was unpacked into, if any.
func (a *Archive) Close() error {
	if a.cleanup == nil {
		return nil
	}
	return a.cleanup()
}

// OpenArchive opens an image from a `docker save` or `crane pull` tarball (manifest.json), an
// OCI image layout directory, or a tar of an OCI image layout. A tar of a layout is unpacked
// into a new directory under tempDir ("" means os.TempDir()) — regular files and directories
// only, at most as many bytes as the tar file holds, every path kept inside that directory —
// and removed by Close. The layout must hold exactly one image (an index is resolved to its
// linux/amd64 image, or its only image). Errors wrap ErrArchive, or are I/O errors.
func OpenArchive(ctx context.Context, p, tempDir string) (*Archive, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return openLayout(p, nil)
	}
	names, err := tarNames(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrArchive, err)
	}
	switch {
	case names["manifest.json"]:
		img, err := tarball.ImageFromPath(p, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrArchive, err)
		}
		files, compressed, err := tarballLayerFiles(p)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrArchive, err)
		}
		if compressed {
			img = tarballImage{Image: img, path: p, files: files}
		}
		return &Archive{Image: img}, nil
	case names["index.json"] && names["oci-layout"]:
		dir, err := os.MkdirTemp(tempDir, "portcullis-layout-*")
		if err != nil {
			return nil, err
		}
		cleanup := func() error { return os.RemoveAll(dir) }
		if err := unpackLayout(ctx, p, dir, fi.Size()); err != nil {
			cleanup()
			return nil, err
		}
		return openLayout(dir, cleanup)
	}
	return nil, fmt.Errorf("%w: neither manifest.json nor an OCI layout (index.json, oci-layout) at the top", ErrArchive)
}

// tarballLayerFiles returns the layer files of the image of a docker save / crane pull
// tarball, and whether the first one is stored compressed (crane) rather than as a plain
// tar (docker save), as go-containerregistry's tarball package decides it.
func tarballLayerFiles(p string) ([]string, bool, error) {
	manifest, err := tarFile(p, "manifest.json", 1<<20)
	if err != nil {
		return nil, false, err
	}
	var entries []struct{ Layers []string }
	if err := json.Unmarshal(manifest, &entries); err != nil {
		return nil, false, fmt.Errorf("manifest.json: %w", err)
	}
	if len(entries) == 0 || len(entries[0].Layers) == 0 {
		return nil, false, nil
	}
	head, err := tarFile(p, entries[0].Layers[0], 4)
	if err != nil {
		return nil, false, err
	}
	return entries[0].Layers, bytes.HasPrefix(head, []byte(gzipMagic)) || bytes.HasPrefix(head, []byte(zstdMagic)), nil
}

// tarballImage is an image of a tarball whose layers are stored compressed. Its Layers
// read the layer files as Decompress does and do not ask for their digests:
// go-containerregistry computes the manifest of such a tarball, hashing every layer, before
// it returns a layer. A layer's Digest and Size still come from that manifest.
type tarballImage struct {
	v1.Image
	path  string
	files []string
}

func (t tarballImage) Layers() ([]v1.Layer, error) {
	out := make([]v1.Layer, len(t.files))
	for i := range t.files {
		out[i] = tarballLayer{t, i}
	}
	return out, nil
}

// tarballLayer is the i-th layer of a tarballImage.
type tarballLayer struct {
	img tarballImage
	i   int
}

func (l tarballLayer) Compressed() (io.ReadCloser, error) {
	f, err := os.Open(l.img.path)
	if err != nil {
		return nil, err
	}
	name := path.Clean(l.img.files[l.i])
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err != nil {
			f.Close()
			if err == io.EOF {
				err = fmt.Errorf("%s not found", name)
			}
			return nil, err
		}
		if hdr.Typeflag == tar.TypeReg && path.Clean(hdr.Name) == name {
			return struct {
				io.Reader
				io.Closer
			}{tr, f}, nil
		}
	}
}

func (l tarballLayer) Uncompressed() (io.ReadCloser, error) {
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	return Decompress(rc)
}

// layer returns the layer as go-containerregistry reads it, for what is asked of its
// manifest.
func (l tarballLayer) layer() (v1.Layer, error) {
	ls, err := l.img.Image.Layers()
	if err != nil {
		return nil, err
	}
	if l.i >= len(ls) {
		return nil, fmt.Errorf("layer %d of %d", l.i, len(ls))
	}
	return ls[l.i], nil
}

func (l tarballLayer) Digest() (v1.Hash, error) {
	ly, err := l.layer()
	if err != nil {
		return v1.Hash{}, err
	}
	return ly.Digest()
}

func (l tarballLayer) DiffID() (v1.Hash, error) {
	ly, err := l.layer()
	if err != nil {
		return v1.Hash{}, err
	}
	return ly.DiffID()
}

func (l tarballLayer) Size() (int64, error) {
	ly, err := l.layer()
	if err != nil {
		return 0, err
	}
	return ly.Size()
}

func (l tarballLayer) MediaType() (types.MediaType, error) {
	ly, err := l.layer()
	if err != nil {
		return "", err
	}
	return ly.MediaType()
}

// tarFile returns at most the first max bytes of the regular file name in the tar file p.
func tarFile(p, name string, max int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("%s not found", name)
		}
		if err != nil {
			return nil, err
		}
		if hdr.Typeflag == tar.TypeReg && path.Clean(hdr.Name) == path.Clean(name) {
			return io.ReadAll(io.LimitReader(tr, max))
		}
	}
}

// tarNames lists the top-level regular file names of a tar file.
func tarNames(p string) (map[string]bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names, nil
		}
		if err != nil {
			return nil, err
		}
		if hdr.Typeflag == tar.TypeReg {
			names[path.Clean(hdr.Name)] = true
		}
	}
}

func unpackLayout(ctx context.Context, src, dir string, budget int64) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(f)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrArchive, err)
		}
		name := path.Clean(hdr.Name)
		if strings.HasPrefix(hdr.Name, "/") || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("%w: unsafe path %q", ErrArchive, hdr.Name)
		}
		if name == "." {
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o700); err != nil {
				return fmt.Errorf("%w: %v", ErrArchive, err)
			}
		case tar.TypeReg:
			budget -= hdr.Size
			if budget < 0 {
				return fmt.Errorf("%w: entries larger than the archive", ErrArchive)
			}
			if d := path.Dir(name); d != "." {
				if err := root.MkdirAll(d, 0o700); err != nil {
					return fmt.Errorf("%w: %v", ErrArchive, err)
				}
			}
			out, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrArchive, err)
			}
			_, err = io.Copy(out, io.LimitReader(tr, hdr.Size))
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: %s: only files and directories are allowed in an OCI layout tar", ErrArchive, hdr.Name)
		}
	}
}

func openLayout(dir string, cleanup func() error) (*Archive, error) {
	fail := func(err error) (*Archive, error) {
		if cleanup != nil {
			cleanup()
		}
		return nil, fmt.Errorf("%w: %v", ErrArchive, err)
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return fail(err)
	}
	img, dgst, err := pickImage(idx, 0)
	if err != nil {
		return fail(err)
	}
	return &Archive{Image: StoredLayers(img), Digest: dgst.String(), cleanup: cleanup}, nil
}

func pickImage(idx v1.ImageIndex, depth int) (v1.Image, v1.Hash, error) {
	if depth > 4 {
		return nil, v1.Hash{}, errors.New("indexes nested too deep")
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, v1.Hash{}, err
	}
	var images, indexes []v1.Descriptor
	for _, d := range im.Manifests {
		switch d.MediaType {
		case types.OCIManifestSchema1, types.DockerManifestSchema2:
			images = append(images, d)
		case types.OCIImageIndex, types.DockerManifestList:
			indexes = append(indexes, d)
		}
	}
	want := v1.Platform{OS: "linux", Architecture: "amd64"}
	switch {
	case len(images) == 1 && len(indexes) == 0:
		img, err := idx.Image(images[0].Digest)
		return img, images[0].Digest, err
	case len(images) > 1:
		for _, d := range images {
			if d.Platform != nil && d.Platform.OS == want.OS && d.Platform.Architecture == want.Architecture {
				img, err := idx.Image(d.Digest)
				return img, d.Digest, err
			}
		}
		return nil, v1.Hash{}, fmt.Errorf("layout holds %d images and none is for linux/amd64", len(images))
	case len(indexes) == 1 && len(images) == 0:
		child, err := idx.ImageIndex(indexes[0].Digest)
		if err != nil {
			return nil, v1.Hash{}, err
		}
		return pickImage(child, depth+1)
	}
	return nil, v1.Hash{}, fmt.Errorf("layout holds %d images and %d indexes; want exactly one", len(images), len(indexes))
}
