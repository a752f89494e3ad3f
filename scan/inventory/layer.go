package inventory

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
)

// Errors returned by ReadLayer, wrapped with the offending path or size.
var (
	// ErrLimit is returned when a layer, a file or the number of entries is over a limit of
	// Options.
	ErrLimit = errors.New("over limit")
	// ErrUnsafePath is returned for a tar entry (or hard link target) with an absolute path
	// or one that climbs out of the root with "..".
	ErrUnsafePath = errors.New("unsafe path")
	// ErrMalformed is returned when a package database that the extractors must read (dpkg
	// status, apk installed, an rpm database, package-lock.json) cannot be parsed.
	ErrMalformed = errors.New("malformed package database")
)

// Options bounds what ReadLayer reads. The zero value means the defaults.
type Options struct {
	// MaxLayerBytes caps the uncompressed tar bytes read from one layer (default 8 GiB).
	MaxLayerBytes int64
	// MaxFileBytes caps the size of a package database or metadata file read into memory,
	// and of one package header of an rpm database (default 64 MiB).
	MaxFileBytes int64
	// MaxBinaryBytes caps the size of an executable, Java archive or rpm database: files
	// read at random, of which those over spoolThreshold are copied to a temporary file
	// (default 512 MiB).
	MaxBinaryBytes int64
	// MaxEntries caps the number of tar entries in one layer (default 4,194,304).
	MaxEntries int
	// MaxPackages caps the packages found in one layer (default 1,048,576).
	MaxPackages int
	// TempDir is where large executables, archives and rpm databases are spooled, each
	// removed once read; "" means os.TempDir().
	TempDir string
}

func (o Options) withDefaults() Options {
	if o.MaxLayerBytes <= 0 {
		o.MaxLayerBytes = 8 << 30
	}
	if o.MaxFileBytes <= 0 {
		o.MaxFileBytes = 64 << 20
	}
	if o.MaxBinaryBytes <= 0 {
		o.MaxBinaryBytes = 512 << 20
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = 4 << 20
	}
	if o.MaxPackages <= 0 {
		o.MaxPackages = 1 << 20
	}
	return o
}

const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
	// spoolThreshold is the size above which an executable is spooled to a temporary file
	// rather than held in memory.
	spoolThreshold = 16 << 20
)

// ReadLayer reads one uncompressed layer tar stream to its end and returns its inventory.
// It fails with ErrLimit, ErrUnsafePath or ErrMalformed (wrapped, naming the entry), with the
// reader's error, or with ctx's error. Only regular files that an extractor understands are
// read; the rest of the stream is discarded.
func ReadLayer(ctx context.Context, r io.Reader, opts Options) (*Layer, error) {
	opts = opts.withDefaults()
	cr := &countingReader{r: r, limit: opts.MaxLayerBytes}
	files := make(map[string]*File)
	packages := 0 // found so far, counting files replaced later: a bound, not a count
	layer := &Layer{Format: FormatVersion}
	tr := tar.NewReader(cr)
	for n := 0; ; n++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if n >= opts.MaxEntries {
			return nil, fmt.Errorf("%w: more than %d tar entries", ErrLimit, opts.MaxEntries)
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, cr.wrap(fmt.Errorf("read tar: %w", err))
		}
		p, err := cleanPath(hdr.Name)
		if err != nil {
			return nil, err
		}
		if p == "" {
			continue // the root directory
		}
		dir, base := path.Split(p)
		dir = strings.TrimSuffix(dir, "/")
		switch {
		case base == whiteoutOpaque:
			layer.OpaqueDirs = append(layer.OpaqueDirs, dir)
			continue
		case strings.HasPrefix(base, whiteoutPrefix+whiteoutPrefix):
			continue // other aufs metadata
		case strings.HasPrefix(base, whiteoutPrefix):
			layer.Whiteouts = append(layer.Whiteouts, path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix)))
			continue
		}
		// A later entry for the same path replaces an earlier one.
		delete(files, p)
		kind := classify(p)
		switch hdr.Typeflag {
		case tar.TypeSymlink:
			// Recorded only where an extractor looks, so that it hides a lower layer's
			// file there; a symlink replacing a lower Go binary is not tracked.
			if kind != kindNone {
				files[p] = &File{Path: p, Symlink: true}
			}
		case tar.TypeLink:
			target, err := cleanPath(hdr.Linkname)
			if err != nil {
				return nil, fmt.Errorf("hard link %s: %w", p, err)
			}
			if t, ok := files[target]; ok && (kind == classify(target) || t.Symlink) {
				// Another name of the same file: its packages count again only where an
				// extractor would read it under that name (a second name of a Go binary,
				// not a package database linked to elsewhere).
				files[p] = relocate(t, p)
				if packages += len(files[p].Packages); packages > opts.MaxPackages {
					return nil, fmt.Errorf("%w: more than %d packages in one layer", ErrLimit, opts.MaxPackages)
				}
			} else if kind != kindNone {
				files[p] = &File{Path: p}
			}
		case tar.TypeReg, tar.TypeGNUSparse:
			f, err := readFile(ctx, tr, hdr, p, kind, opts)
			if err != nil {
				return nil, cr.wrap(err)
			}
			if f != nil {
				files[p] = f
				if packages += len(f.Packages); packages > opts.MaxPackages {
					return nil, fmt.Errorf("%w: more than %d packages in one layer", ErrLimit, opts.MaxPackages)
				}
			}
		}
	}
	// Read to the end so that a caller hashing the stream sees all of it.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return nil, cr.wrap(fmt.Errorf("read tar: %w", err))
	}
	for _, f := range files {
		layer.Files = append(layer.Files, *f)
	}
	slices.SortFunc(layer.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	slices.Sort(layer.Whiteouts)
	layer.Whiteouts = slices.Compact(layer.Whiteouts)
	slices.Sort(layer.OpaqueDirs)
	layer.OpaqueDirs = slices.Compact(layer.OpaqueDirs)
	return layer, nil
}

// cleanPath turns a tar entry name into a clean path relative to the image root, "" for the
// root itself. Absolute names and names that climb above the root fail with ErrUnsafePath.
func cleanPath(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%w: %q is absolute", ErrUnsafePath, name)
	}
	p := path.Clean(name)
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("%w: %q leaves the root", ErrUnsafePath, name)
	}
	if p == "." {
		return "", nil
	}
	return p, nil
}

func relocate(f *File, p string) *File {
	g := &File{Path: p, Symlink: f.Symlink, OSRelease: f.OSRelease}
	for _, pkg := range f.Packages {
		pkg.Location = p
		g.Packages = append(g.Packages, pkg)
	}
	return g
}

type fileKind int

const (
	kindNone fileKind = iota
	kindOSRelease
	kindDpkg
	kindApk
	kindRpm
	kindNpmLock
	kindNpmPackage
	kindPython
	kindJava
)

func classify(p string) fileKind {
	dir, base := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	switch {
	case p == "etc/os-release" || p == "usr/lib/os-release":
		return kindOSRelease
	case p == "var/lib/dpkg/status":
		return kindDpkg
	case dir == "var/lib/dpkg/status.d" && !strings.HasSuffix(base, ".md5sums"):
		return kindDpkg
	case p == "lib/apk/db/installed":
		return kindApk
	case isRpmDB(dir, base):
		return kindRpm
	case base == "package-lock.json" || (base == ".package-lock.json" && path.Base(dir) == "node_modules"):
		return kindNpmLock
	case base == "package.json" && inNodeModules(dir):
		return kindNpmPackage
	case base == "METADATA" && strings.HasSuffix(dir, ".dist-info"),
		base == "PKG-INFO" && strings.HasSuffix(dir, ".egg-info"),
		strings.HasSuffix(base, ".egg-info"):
		return kindPython
	}
	switch strings.ToLower(path.Ext(base)) {
	case ".jar", ".war", ".ear":
		return kindJava
	}
	return kindNone
}

// inNodeModules reports whether dir is node_modules/<name> or node_modules/@scope/<name>.
func inNodeModules(dir string) bool {
	parent := path.Dir(dir)
	if path.Base(parent) == "node_modules" {
		return true
	}
	return strings.HasPrefix(path.Base(parent), "@") && path.Base(path.Dir(parent)) == "node_modules"
}

// readAllSized is io.ReadAll with room for size bytes from the start (the
// size a tar header gives), instead of growing by doubling from 512 bytes.
func readAllSized(r io.Reader, size int64) ([]byte, error) {
	b := make([]byte, 0, max(size, 0)+1)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}

// readFile runs the extractor for a regular file. It returns nil for files that are of no
// interest.
func readFile(ctx context.Context, r io.Reader, hdr *tar.Header, p string, kind fileKind, opts Options) (*File, error) {
	executable := hdr.FileInfo().Mode()&0o111 != 0
	if kind == kindNone && !executable {
		return nil, nil
	}
	f := &File{Path: p}
	if kind == kindNone || kind == kindJava || kind == kindRpm {
		return f, readBinary(ctx, r, hdr, f, kind, opts)
	}
	if hdr.Size > opts.MaxFileBytes {
		return nil, fmt.Errorf("%w: %s is %d bytes, over the limit of %d", ErrLimit, p, hdr.Size, opts.MaxFileBytes)
	}
	data, err := readAllSized(io.LimitReader(r, opts.MaxFileBytes+1), hdr.Size)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	if int64(len(data)) > opts.MaxFileBytes {
		return nil, fmt.Errorf("%w: %s is over the limit of %d bytes", ErrLimit, p, opts.MaxFileBytes)
	}
	switch kind {
	case kindOSRelease:
		f.OSRelease = ParseOSRelease(data)
	case kindDpkg:
		f.Packages, err = ParseDpkgStatus(data)
	case kindApk:
		f.Packages, err = ParseApkInstalled(data)
	case kindNpmLock:
		f.Packages, err = ParsePackageLock(data)
	case kindNpmPackage:
		f.Packages = ParseNodePackage(data)
	case kindPython:
		f.Packages = ParsePythonMetadata(data)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	setLocation(f.Packages, p)
	return f, nil
}

// readBinary reads a file its extractor reads at random: an executable (kindNone), a Java
// archive or an rpm database. Executables that are not ELF files are kept as empty Files:
// they still hide a lower layer's file of the same path.
func readBinary(ctx context.Context, r io.Reader, hdr *tar.Header, f *File, kind fileKind, opts Options) error {
	var magic [4]byte
	n, err := io.ReadFull(r, magic[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && err != io.EOF {
		return fmt.Errorf("read %s: %w", f.Path, err)
	}
	head := magic[:n]
	if kind == kindNone && !bytes.Equal(head, []byte("\x7fELF")) {
		return nil
	}
	if hdr.Size > opts.MaxBinaryBytes {
		return fmt.Errorf("%w: %s is %d bytes, over the limit of %d", ErrLimit, f.Path, hdr.Size, opts.MaxBinaryBytes)
	}
	sp, err := spool(io.MultiReader(bytes.NewReader(head), r), hdr.Size, opts)
	if err != nil {
		return fmt.Errorf("read %s: %w", f.Path, err)
	}
	defer sp.Close()
	switch kind {
	case kindJava:
		f.Packages = ParseJavaArchive(sp, sp.size, f.Path, opts.MaxFileBytes)
	case kindRpm:
		if f.Packages, err = ParseRpmDB(ctx, sp, sp.size, opts.MaxFileBytes); err != nil {
			return fmt.Errorf("%s: %w", f.Path, err)
		}
	default:
		f.Packages = ParseGoBinary(sp)
	}
	setLocation(f.Packages, f.Path)
	return ctx.Err()
}

func setLocation(pkgs []Package, p string) {
	for i := range pkgs {
		pkgs[i].Location = p
	}
}

// countingReader fails once more than limit bytes have been read.
type countingReader struct {
	r        io.Reader
	n, limit int64
	exceeded bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.n >= c.limit {
		// Allow one byte past the limit to tell "exactly at" from "over".
		p = p[:min(len(p), 1)]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.limit {
		c.exceeded = true
		return n, fmt.Errorf("%w: layer is over %d bytes uncompressed", ErrLimit, c.limit)
	}
	return n, err
}

// wrap replaces an error caused by the limit (the tar reader may rewrap it) with the limit error.
func (c *countingReader) wrap(err error) error {
	if c.exceeded && !errors.Is(err, ErrLimit) {
		return fmt.Errorf("%w: layer is over %d bytes uncompressed", ErrLimit, c.limit)
	}
	return err
}
