package storage

import (
	"context"
	"errors"
	"path"
	"slices"
	"strings"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/minio/minio-go/v7"
)

// List returns the paths of the objects and directories directly under dir.
// It returns storagedriver.PathNotFoundError for a directory with nothing in
// it, except the root.
func (d *driver) List(ctx context.Context, dir string) ([]string, error) {
	if paths, ok := d.hashStateList(dir); ok {
		return paths, nil
	}
	prefix := d.dirPrefix(dir)
	noOwner := false
	var paths []string
	for obj := range d.client.ListObjectsIter(ctx, d.bucket, minio.ListObjectsOptions{
		Prefix:     prefix,
		FetchOwner: &noOwner,
	}) {
		if obj.Err != nil {
			return nil, translate("list", dir, obj.Err)
		}
		if obj.Key == prefix || d.isPending(obj.Key) {
			continue
		}
		paths = append(paths, d.pathOf(strings.TrimSuffix(obj.Key, "/")))
	}
	if len(paths) == 0 && dir != "/" {
		return nil, storagedriver.PathNotFoundError{Path: dir, DriverName: driverName}
	}
	return paths, nil
}

// Walk calls f for every directory and object under from, depth first in
// lexical order, listing 1000 keys per request. Directories are inferred
// from the keys. f may return storagedriver.ErrSkipDir to skip the rest of a
// directory and storagedriver.ErrFilledBuffer to stop. The size of an
// object that may be an alias costs one HEAD request. Walk returns
// storagedriver.PathNotFoundError when from holds nothing.
func (d *driver) Walk(ctx context.Context, from string, f storagedriver.WalkFn, options ...func(*storagedriver.WalkOptions)) error {
	var opts storagedriver.WalkOptions
	for _, o := range options {
		o(&opts)
	}
	noOwner := false
	list := minio.ListObjectsOptions{Prefix: d.dirPrefix(from), Recursive: true, FetchOwner: &noOwner}
	if opts.StartAfterHint != "" {
		list.StartAfter = d.key(opts.StartAfterHint)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		seen    int
		lastDir = from // the deepest directory reported so far
		skipDir string // the directory f asked to skip
	)
	visit := func(fi storagedriver.FileInfo) (stop bool, err error) {
		if isSubpath(fi.Path(), skipDir) {
			return false, nil
		}
		switch err := f(fi); {
		case err == nil:
			return false, nil
		case errors.Is(err, storagedriver.ErrSkipDir):
			skipDir = fi.Path()
			return false, nil
		case errors.Is(err, storagedriver.ErrFilledBuffer):
			return true, nil
		default:
			return true, err
		}
	}
	for obj := range d.client.ListObjectsIter(ctx, d.bucket, list) {
		if obj.Err != nil {
			return translate("walk", from, obj.Err)
		}
		if d.isPending(obj.Key) || strings.HasSuffix(obj.Key, "/") {
			continue
		}
		seen++
		file := d.pathOf(obj.Key)
		for _, dir := range directoriesBetween(lastDir, file) {
			lastDir = dir
			fi := storagedriver.FileInfoInternal{FileInfoFields: storagedriver.FileInfoFields{Path: dir, IsDir: true}}
			if stop, err := visit(fi); stop {
				return err
			}
		}
		size := obj.Size
		if maybeAlias(obj.Key, size) {
			a, ok, err := d.statAliasOrPlain(ctx, obj.Key)
			if err != nil {
				return translate("walk", file, err)
			}
			if ok {
				size = a.size
			}
		}
		fi := storagedriver.FileInfoInternal{FileInfoFields: storagedriver.FileInfoFields{
			Path:    file,
			Size:    size,
			ModTime: obj.LastModified,
		}}
		if stop, err := visit(fi); stop {
			return err
		}
	}
	if seen > 0 || from == "/" {
		return nil
	}
	// Nothing after the hint is not the same as nothing at all.
	if opts.StartAfterHint != "" {
		exists, err := d.hasChildren(ctx, from)
		if err != nil {
			return translate("walk", from, err)
		}
		if exists {
			return nil
		}
	}
	return storagedriver.PathNotFoundError{Path: from, DriverName: driverName}
}

// directoriesBetween returns, outermost first, the directories above file
// that are neither last nor one of its ancestors: those a walk that last
// reported directory last has yet to report before file.
//
//	directoriesBetween("/a", "/a/b/c/f")    = ["/a/b", "/a/b/c"]
//	directoriesBetween("/a/b/c", "/a/b/d/f") = ["/a/b/d"]
//	directoriesBetween("/a/b/c", "/a/e")    = []
func directoriesBetween(last, file string) []string {
	var dirs []string
	for dir := path.Dir(file); dir != "/" && !isSubpath(last, dir); dir = path.Dir(dir) {
		dirs = append(dirs, dir)
	}
	slices.Reverse(dirs)
	return dirs
}

// isSubpath reports whether p is dir or lies under it.
func isSubpath(p, dir string) bool {
	switch dir {
	case "":
		return false
	case "/":
		return strings.HasPrefix(p, "/")
	}
	return p == dir || strings.HasPrefix(p, dir+"/")
}
