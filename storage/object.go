package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/minio/minio-go/v7"
)

// contentType is the type of every object the driver writes.
const contentType = "application/octet-stream"

// GetContent returns the whole object at path, or
// storagedriver.PathNotFoundError.
func (d *driver) GetContent(ctx context.Context, path string) ([]byte, error) {
	if b, ok := d.hashStateContent(path); ok {
		return b, nil
	}
	if data, ok := startedAtData(path); ok {
		if rec := requestOf(ctx); rec != nil {
			return d.startedAt(ctx, rec, path, data)
		}
	}
	return d.getContent(ctx, path)
}

// getContent is GetContent without the answers from this process's records.
func (d *driver) getContent(ctx context.Context, path string) ([]byte, error) {
	if h, ok := d.held.unmoved(path); ok {
		return bytes.Clone(h.data), nil
	}
	if d.heldGone(path) {
		return nil, storagedriver.PathNotFoundError{Path: path, DriverName: driverName}
	}
	body, info, _, err := d.openObject(ctx, d.key(path), minio.GetObjectOptions{})
	if err != nil {
		return nil, translate("get", path, err)
	}
	defer body.Close()
	data, err := readSized(body, info.Size)
	if err != nil {
		return nil, translate("get", path, err)
	}
	return data, nil
}

// readSized reads r to its end into a buffer of size bytes, the size the
// object's response announced.
func readSized(r io.Reader, size int64) ([]byte, error) {
	var buf bytes.Buffer
	if size > 0 {
		buf.Grow(int(size))
	}
	_, err := buf.ReadFrom(r)
	return buf.Bytes(), err
}

// getObject sends one GET and returns the body with the object's metadata.
func (d *driver) getObject(ctx context.Context, key string, opts minio.GetObjectOptions) (io.ReadCloser, minio.ObjectInfo, error) {
	body, info, _, err := minio.Core{Client: d.client}.GetObject(ctx, d.bucket, key, opts)
	return body, info, err
}

// openObject is getObject for a driver path's key: when the object there is
// an alias, it returns the body and metadata of the data object it names,
// read with the same options. It also returns the key it read.
func (d *driver) openObject(ctx context.Context, key string, opts minio.GetObjectOptions) (io.ReadCloser, minio.ObjectInfo, string, error) {
	body, info, err := d.getObject(ctx, key, opts)
	if err != nil {
		return nil, info, key, err
	}
	a, ok, err := d.aliasOf(info.Metadata)
	if err != nil || !ok {
		if err != nil {
			body.Close()
		}
		return body, info, key, err
	}
	body.Close()
	body, info, err = d.getObject(ctx, a.key, opts)
	return body, info, a.key, err
}

// PutContent replaces the object at path with content in one request. A
// hash state of an upload that no one will read is not stored; one that the
// next request will read also goes into the upload's pending tail (see
// dropHashState).
func (d *driver) PutContent(ctx context.Context, path string, content []byte) error {
	if d.dropHashState(path, content) {
		return nil
	}
	if isUploadData(path) {
		if err := d.settle(ctx, path, nil); err != nil {
			return err
		}
	}
	opts := minio.PutObjectOptions{ContentType: contentType, DisableMultipart: true}
	if len(content) > MaxPartSize {
		opts = minio.PutObjectOptions{ContentType: contentType, PartSize: uint64(d.partSize), NumThreads: 1}
	}
	_, err := d.putObject(ctx, d.key(path), content, opts)
	if isHashState(path) {
		if err != nil {
			// distribution's blobWriter.Close returns this error before
			// its writer's Close, and the upload handlers ignore it.
			noteWriteFailure(ctx, translate("put", path, err))
		} else {
			d.hashWrites.put(path, bytes.Clone(content))
		}
	}
	return translate("put", path, err)
}

// Reader returns the object at path from offset on. An offset at or past the
// end gives an empty reader; a missing object gives
// storagedriver.PathNotFoundError.
//
// distribution stats a blob's data right before it reads it. When that Stat
// found an alias, Reader asks for the data it names straight away, without
// reading the alias again (one GET instead of two, or of three from an
// offset past the alias's own 68 bytes). The data object of an alias is
// written once and never changed, and a blob's path names its content, so
// those are the bytes the alias would give; a Stat's alias serves one Reader
// only, and data that is gone meanwhile sends Reader back to the path.
func (d *driver) Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	var opts minio.GetObjectOptions
	if offset > 0 {
		if err := opts.SetRange(offset, 0); err != nil {
			return nil, storagedriver.InvalidOffsetError{Path: path, Offset: offset, DriverName: driverName}
		}
	}
	if h, ok := d.held.unmoved(path); ok {
		return io.NopCloser(bytes.NewReader(h.data[min(offset, int64(len(h.data))):])), nil
	}
	if d.heldGone(path) {
		return nil, storagedriver.PathNotFoundError{Path: path, DriverName: driverName}
	}
	if a, ok := d.stated.take(path); ok {
		if offset >= a.size {
			return io.NopCloser(bytes.NewReader(nil)), nil
		}
		body, info, err := d.getObject(ctx, a.key, opts)
		if err == nil {
			return &resumingReader{ctx: ctx, d: d, key: a.key, path: path, offset: offset, etag: info.ETag, body: body}, nil
		}
		if !isNotFound(err) {
			return nil, translate("read", path, err)
		}
		// The data is gone: read the path again, as if nothing was known.
	}
	key := d.key(path)
	body, info, key, err := d.openObject(ctx, key, opts)
	if errorCode(err) == codeInvalidRange {
		// Past the end of the object at key, which may be an alias of a
		// larger one.
		a, ok, serr := d.statAlias(ctx, key)
		if serr != nil {
			return nil, translate("read", path, serr)
		}
		if !ok || offset >= a.size {
			return io.NopCloser(bytes.NewReader(nil)), nil
		}
		key = a.key
		body, info, err = d.getObject(ctx, key, opts)
	}
	if err != nil {
		return nil, translate("read", path, err)
	}
	return &resumingReader{ctx: ctx, d: d, key: key, path: path, offset: offset, etag: info.ETag, body: body}, nil
}

// maxResumes bounds how often one Reader re-requests its object after the
// connection broke in the middle of the body.
const maxResumes = 3

// resumingReader reads an object's body and, when the connection breaks
// before the end (a reset, or a body shorter than announced), asks for the
// rest from where it stopped, on condition that the object is still the
// same (its ETag). A server that stays away, or an object that changed,
// ends the read with an error: never with a body that looks complete.
type resumingReader struct {
	ctx     context.Context
	d       *driver
	key     string
	path    string
	offset  int64 // of the next byte to read
	etag    string
	body    io.ReadCloser
	resumes int
}

func (r *resumingReader) Read(p []byte) (int, error) {
	for {
		n, err := r.body.Read(p)
		r.offset += int64(n)
		if err == nil || err == io.EOF || n > 0 || r.ctx.Err() != nil || r.resumes >= maxResumes || r.etag == "" {
			if err != nil && err != io.EOF && n == 0 {
				err = translate("read", r.path, err)
			}
			return n, err
		}
		r.resumes++
		if rerr := r.resume(); rerr != nil {
			return 0, translate("read", r.path, errors.Join(err, rerr))
		}
	}
}

func (r *resumingReader) resume() error {
	r.body.Close()
	var opts minio.GetObjectOptions
	if err := opts.SetRange(r.offset, 0); err != nil {
		return err
	}
	if err := opts.SetMatchETag(r.etag); err != nil {
		return err
	}
	body, _, err := r.d.getObject(r.ctx, r.key, opts)
	if err != nil {
		r.body = io.NopCloser(bytes.NewReader(nil))
		return err
	}
	r.body = body
	return nil
}

func (r *resumingReader) Close() error { return r.body.Close() }

// Stat describes the object at path or, when there is none, the directory
// that the keys under path form. Directories have no size or time. Upload
// data this process has just committed is described from the commit, and a
// missing file of distribution's layout costs no listing (see upload.go).
func (d *driver) Stat(ctx context.Context, path string) (storagedriver.FileInfo, error) {
	if h, ok := d.held.unmoved(path); ok {
		return storagedriver.FileInfoInternal{FileInfoFields: storagedriver.FileInfoFields{
			Path:    path,
			Size:    int64(len(h.data)),
			ModTime: h.mod,
		}}, nil
	}
	if d.heldGone(path) {
		return nil, storagedriver.PathNotFoundError{Path: path, DriverName: driverName}
	}
	if c, ok := d.commits.get(path); ok {
		return storagedriver.FileInfoInternal{FileInfoFields: storagedriver.FileInfoFields{
			Path:    path,
			Size:    c.size,
			ModTime: c.mod,
		}}, nil
	}
	if path != "/" {
		info, err := d.client.StatObject(ctx, d.bucket, d.key(path), minio.StatObjectOptions{})
		if err == nil {
			size := info.Size
			a, ok, err := d.aliasOf(info.Metadata)
			if err != nil {
				return nil, translate("stat", path, err)
			}
			if ok {
				size = a.size
				if isBlobData(path) {
					d.stated.put(path, a)
				}
			}
			return storagedriver.FileInfoInternal{FileInfoFields: storagedriver.FileInfoFields{
				Path:    path,
				Size:    size,
				ModTime: info.LastModified,
			}}, nil
		}
		if !isNotFound(err) {
			return nil, translate("stat", path, err)
		}
		if isLayoutFile(path) {
			return nil, storagedriver.PathNotFoundError{Path: path, DriverName: driverName}
		}
	}
	isDir, err := d.hasChildren(ctx, path)
	if err != nil {
		return nil, translate("stat", path, err)
	}
	if !isDir {
		return nil, storagedriver.PathNotFoundError{Path: path, DriverName: driverName}
	}
	return storagedriver.FileInfoInternal{FileInfoFields: storagedriver.FileInfoFields{
		Path:  path,
		IsDir: true,
	}}, nil
}

// hasChildren reports whether any object other than writer state lies under
// path.
func (d *driver) hasChildren(ctx context.Context, path string) (bool, error) {
	noOwner := false
	for obj := range d.client.ListObjectsIter(ctx, d.bucket, minio.ListObjectsOptions{
		Prefix:     d.dirPrefix(path),
		MaxKeys:    2, // at the root: one entry and, maybe, the pending prefix
		FetchOwner: &noOwner,
	}) {
		if obj.Err != nil {
			return false, obj.Err
		}
		if !d.isPending(obj.Key) {
			return true, nil
		}
	}
	return false, nil
}

// Move copies the object at sourcePath to destPath on the server, replacing
// what was there, then removes the source. Objects over MaxPartSize are
// copied in parts, Options.Concurrency at a time. An alias is copied as the
// small object it is: its data stays where it is, named now by destPath
// alone (the data of an alias that destPath held before is left for
// DeleteUnnamedData). To a path that cannot hold an alias, the data of an
// alias is copied, and the alias and its data removed after.
// Upload data this process has just committed is copied on condition that
// it is still the object committed, without asking for it first; that of a
// held commit is put at destPath from memory (see held.go).
func (d *driver) Move(ctx context.Context, sourcePath, destPath string) error {
	if h, ok := d.held.unmoved(sourcePath); ok {
		d.stated.forget(destPath)
		return d.moveHeld(ctx, sourcePath, destPath, h)
	}
	srcKey := d.key(sourcePath)
	c, ok := d.commits.get(sourcePath)
	d.commits.forget(sourcePath)
	d.stated.forget(sourcePath)
	d.stated.forget(destPath)
	info := minio.ObjectInfo{Size: c.size, ETag: c.etag}
	var err error
	if !ok || c.etag == "" {
		info, err = d.client.StatObject(ctx, d.bucket, srcKey, minio.StatObjectOptions{})
		if err != nil {
			return translate("move", sourcePath, err)
		}
	}
	if sourcePath == destPath {
		return nil
	}
	var data string // the data object of an alias that destPath cannot hold
	if a, ok, _ := d.aliasOf(info.Metadata); ok && !canAlias(destPath) {
		data = a.key
		if info, err = d.client.StatObject(ctx, d.bucket, data, minio.StatObjectOptions{}); err != nil {
			return translate("move: stat aliased data", sourcePath, err)
		}
	}
	src := minio.CopySrcOptions{Bucket: d.bucket, Object: srcKey, MatchETag: info.ETag}
	if data != "" {
		src.Object = data
	}
	dst := minio.CopyDestOptions{Bucket: d.bucket, Object: d.key(destPath)}
	if info.Size <= MaxPartSize {
		err = retryDenied(ctx, func() error {
			_, err := d.client.CopyObject(ctx, dst, src)
			return err
		})
	} else {
		dst.NumThreads = uint(d.concurrency)
		err = retryDenied(ctx, func() error {
			_, err := d.client.ComposeObject(ctx, dst, src)
			return err
		})
	}
	if err != nil {
		return translate("move", sourcePath+" to "+destPath, err)
	}
	if err := d.client.RemoveObject(ctx, d.bucket, srcKey, minio.RemoveObjectOptions{}); err != nil {
		return translate("move: remove", sourcePath, err)
	}
	if data != "" {
		err = d.client.RemoveObject(ctx, d.bucket, data, minio.RemoveObjectOptions{})
	}
	return translate("move: remove aliased data", sourcePath, err)
}

// Delete removes the object at path and every object under it, in batches of
// up to 1000 keys per request, with the state of uncommitted writers there.
// It returns storagedriver.PathNotFoundError when there was nothing.
func (d *driver) Delete(ctx context.Context, path string) error {
	d.commits.forget(path)
	d.hashWrites.forget(path)
	d.stated.forget(path)
	// Held commits here: the data a stored commit would have left counts
	// as found, and their tails go with the rest. The data is the only
	// writer in an upload's directory: when its commit is held, the
	// directory has no other writer state to look for.
	var tails []string
	found := 0
	helds := d.held.takeUnder(path)
	for _, h := range helds {
		tails = append(tails, h.tailKey)
		if !h.moved {
			found++
		}
	}
	pending := 0
	onlyHeld := len(helds) == 1 && isUploadDir(path) && helds[0].w.path == path+"/data"
	// The keys in the directory, when its held commit knows them all: no
	// listing (see hashStates).
	var known []string
	if onlyHeld {
		known = helds[0].keys
	}
	if !onlyHeld {
		var err error
		if pending, err = d.deletePending(ctx, path); err != nil {
			d.held.restore(helds)
			return err
		}
	}
	key := d.key(path)
	var (
		listErr error
		data    []string // the data objects of the aliases removed
	)
	objects := func(yield func(minio.ObjectInfo) bool) {
		for _, k := range tails {
			if !yield(minio.ObjectInfo{Key: k}) {
				return
			}
		}
		if known != nil {
			found++ // its startedat, at least: the commit resumed the upload
			for _, k := range known {
				if !yield(minio.ObjectInfo{Key: k}) {
					return
				}
			}
			return
		}
		// An upload's directory is never an object: no request to look.
		if !isUploadDir(path) {
			info, err := d.client.StatObject(ctx, d.bucket, key, minio.StatObjectOptions{})
			switch {
			case err == nil:
				if a, ok, _ := d.aliasOf(info.Metadata); ok {
					data = append(data, a.key)
				}
				found++
				if !yield(minio.ObjectInfo{Key: key}) {
					return
				}
			case !isNotFound(err):
				listErr = err
				return
			}
		}
		for obj := range d.client.ListObjectsIter(ctx, d.bucket, minio.ListObjectsOptions{
			Prefix:    key + "/",
			Recursive: true,
		}) {
			if obj.Err != nil {
				listErr = obj.Err
				return
			}
			if maybeAlias(obj.Key, obj.Size) {
				a, ok, err := d.statAliasOrPlain(ctx, obj.Key)
				if err != nil {
					listErr = err
					return
				}
				if ok {
					data = append(data, a.key)
				}
			}
			found++
			if !yield(minio.ObjectInfo{Key: obj.Key}) {
				return
			}
		}
	}
	if err := d.removeObjects(ctx, objects); err != nil {
		d.held.restore(helds) // their tails may be left: a cancel settles them
		return translate("delete", path, err)
	}
	if listErr != nil {
		d.held.restore(helds)
		return translate("delete", path, listErr)
	}
	// Only now that no alias names them: a failure before this leaves data
	// objects that nothing reads, never an alias without its data.
	if err := d.removeKeys(ctx, data); err != nil {
		return translate("delete: remove aliased data", path, err)
	}
	if found == 0 && pending == 0 {
		return storagedriver.PathNotFoundError{Path: path, DriverName: driverName}
	}
	return nil
}

// removeObjects deletes the objects objects yields with multi-object
// DELETE requests and returns every failure.
func (d *driver) removeObjects(ctx context.Context, objects func(func(minio.ObjectInfo) bool)) error {
	results, err := d.client.RemoveObjectsWithIter(ctx, d.bucket, objects, minio.RemoveObjectsOptions{})
	if err != nil {
		return err
	}
	var errs []error
	for r := range results {
		if r.Err != nil && !isNotFound(r.Err) {
			errs = append(errs, r.Err)
		}
	}
	return errors.Join(errs...)
}

// DeleteFiles removes the objects at paths (files, not directories) with
// multi-object DELETE requests of up to 1000 keys: what garbage
// collection deletes by the thousand. A path with no object is not an
// error.
func (d *Driver) DeleteFiles(ctx context.Context, paths []string) error {
	for _, p := range paths {
		if !storagedriver.PathRegexp.MatchString(p) {
			return storagedriver.InvalidPathError{Path: p, DriverName: driverName}
		}
	}
	keys := make([]string, len(paths))
	for i, p := range paths {
		keys[i] = d.d.key(p)
		d.d.commits.forget(p)
		d.d.hashWrites.forget(p)
		d.d.stated.forget(p)
	}
	data, err := d.d.aliasesOf(ctx, keys)
	if err != nil {
		return translate("delete", fmt.Sprintf("%d files", len(paths)), err)
	}
	var helds []*held
	for _, p := range paths {
		if h := d.d.held.take(p, nil); h != nil {
			keys = append(keys, h.tailKey)
			helds = append(helds, h)
		}
	}
	if err := d.d.removeKeys(ctx, keys); err != nil {
		d.d.held.restore(helds)
		return translate("delete", fmt.Sprintf("%d files", len(paths)), err)
	}
	if err := d.d.removeKeys(ctx, data); err != nil {
		return translate("delete: remove aliased data", fmt.Sprintf("%d files", len(paths)), err)
	}
	return nil
}

// removeKeys deletes the objects at keys with multi-object DELETE requests.
func (d *driver) removeKeys(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	return d.removeObjects(ctx, func(yield func(minio.ObjectInfo) bool) {
		for _, k := range keys {
			if !yield(minio.ObjectInfo{Key: k}) {
				return
			}
		}
	})
}

// statParallel is how many HEAD requests aliasesOf sends at once.
const statParallel = 8

// aliasesOf returns the data objects that the aliases among keys name: one
// HEAD request for each key that can hold an alias. A missing key is not an
// error.
func (d *driver) aliasesOf(ctx context.Context, keys []string) ([]string, error) {
	var (
		mu   sync.Mutex
		data []string
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, statParallel)
	)
	for _, k := range keys {
		if !canAlias(k) {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			a, ok, err := d.statAliasOrPlain(ctx, k)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				errs = append(errs, err)
			case ok:
				data = append(data, a.key)
			}
		})
	}
	wg.Wait()
	return data, errors.Join(errs...)
}
