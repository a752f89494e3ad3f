// Package filesystem is distribution's filesystem storage driver with the
// syncs that make an acknowledged push durable, and none that only slow
// it down.
//
// distribution's driver syncs every file it writes, then its directory: a
// small-image push and pull pays about 40 fsyncs, half of them for upload
// state (the time an upload started, the hash state saved after every
// chunk, and the upload's data at every chunk) that no acknowledged push
// needs. It also renames a committed upload to its blob path without
// syncing the directory, and never syncs a directory it creates, so on a
// filesystem without a journal a blob's or a link's name is not durable.
//
// This driver changes four things and leaves everything else to
// distribution's driver:
//   - Upload state under _uploads/ (startedat, hashstates) is written
//     without syncs, by a write to a temporary file and a rename, so readers
//     never see a partial file. After a power cut an upload may have lost its
//     state: the client's next request for it fails, and it starts the upload
//     again. No push was acknowledged with that state.
//   - An upload's data is synced once, when the upload is committed (the
//     blob's bytes), not every time a chunk's writer is closed.
//   - Move, which commits an upload to its blob path, syncs the directory
//     that receives the name and each directory it created, so the blob
//     survives with its name.
//   - PutContent of anything else (links, manifests, tags) also syncs the
//     parent of each directory the write created (distribution syncs the
//     file and its directory, not the new directory's name).
//
// Everything a 201 acknowledges is therefore durable before the registry
// answers, on any filesystem, journaled or not: the blob data (synced at
// commit), its name and the directories above it (synced by Move), and each
// link, manifest and tag (the file, its directory and any directory the
// write created).
//
// It must not import anything of Portcullis.
package filesystem

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/google/uuid"
)

// Driver stores under a root directory, as distribution's filesystem driver.
type Driver struct {
	storagedriver.StorageDriver
	root    string
	readers chan struct{} // bounds the reads in the kernel at once (read.go)
}

var _ storagedriver.StorageDriver = (*Driver)(nil)

// New returns a driver storing under root, which must exist.
func New(root string) (*Driver, error) {
	d, err := filesystem.FromParameters(map[string]any{"rootdirectory": root})
	if err != nil {
		return nil, err
	}
	return &Driver{StorageDriver: d, root: root, readers: make(chan struct{}, maxReaders)}, nil
}

// uploadState reports whether path is a file of an upload's state other than
// its data: <repository>/_uploads/<id>/startedat or .../hashstates/....
func uploadState(path string) bool {
	_, rest, ok := strings.Cut(path, "/_uploads/")
	if !ok {
		return false
	}
	_, file, _ := strings.Cut(rest, "/")
	return file == "startedat" || strings.HasPrefix(file, "hashstates/")
}

// uploadData reports whether path is an upload's data:
// <repository>/_uploads/<id>/data.
func uploadData(path string) bool {
	_, rest, ok := strings.Cut(path, "/_uploads/")
	if !ok {
		return false
	}
	_, file, _ := strings.Cut(rest, "/")
	return file == "data"
}

// fullPath returns the file of path, or an error for a path that is not a
// valid driver path.
func (d *Driver) fullPath(path string) (string, error) {
	if !storagedriver.PathRegexp.MatchString(path) {
		return "", storagedriver.InvalidPathError{Path: path, DriverName: d.Name()}
	}
	return filepath.Join(d.root, path), nil
}

// PutContent stores contents at path. Upload state is written without
// syncs. Everything else is written by distribution's driver, which syncs
// the file and its directory, and then the parent of each directory it
// created, which distribution leaves unsynced: a new link's directory is
// durable with the link.
func (d *Driver) PutContent(ctx context.Context, path string, contents []byte) error {
	full, err := d.fullPath(path)
	if err != nil {
		return err
	}
	if !uploadState(path) {
		dir := filepath.Dir(full)
		created := d.highestMissing(dir)
		if err := d.StorageDriver.PutContent(ctx, path, contents); err != nil {
			return err
		}
		return syncParents(dir, created)
	}
	if err := os.MkdirAll(filepath.Dir(full), 0o777); err != nil {
		return err
	}
	tmp := full + "." + uuid.NewString() + ".tmp"
	if err := os.WriteFile(tmp, contents, 0o666); err != nil {
		return errors.Join(err, removeIfExists(tmp))
	}
	if err := os.Rename(tmp, full); err != nil {
		return errors.Join(err, removeIfExists(tmp))
	}
	return nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Writer returns a writer to path. An upload's data is synced only when
// the writer is committed; every other path is left to distribution's
// driver.
func (d *Driver) Writer(ctx context.Context, path string, append bool) (storagedriver.FileWriter, error) {
	if !uploadData(path) {
		return d.StorageDriver.Writer(ctx, path, append)
	}
	full, err := d.fullPath(path)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(full), 0o777); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(full, os.O_WRONLY|os.O_CREATE, 0o666)
	if err != nil {
		return nil, err
	}
	var size int64
	if append {
		size, err = f.Seek(0, io.SeekEnd)
	} else {
		err = f.Truncate(0)
	}
	if err != nil {
		return nil, errors.Join(err, f.Close())
	}
	return &fileWriter{file: f, size: size, bw: bufio.NewWriterSize(f, 64<<10)}, nil
}

// Move renames sourcePath to destPath, then syncs the directory that
// received the name and the parent of each directory it created, so that
// the name survives a power cut. The source's data is synced by whoever
// wrote it (an upload, when it was committed).
func (d *Driver) Move(ctx context.Context, sourcePath, destPath string) error {
	src, err := d.fullPath(sourcePath)
	if err != nil {
		return err
	}
	dst, err := d.fullPath(destPath)
	if err != nil {
		return err
	}
	if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
		return storagedriver.PathNotFoundError{Path: sourcePath, DriverName: d.Name()}
	}
	dir := filepath.Dir(dst)
	created := d.highestMissing(dir)
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	if err := os.Rename(src, dst); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	return syncParents(dir, created)
}

// highestMissing returns the highest directory of dir's path under the
// root that does not exist (dir itself when only it is missing), "" when
// dir exists.
func (d *Driver) highestMissing(dir string) string {
	created := ""
	for p := dir; len(p) > len(d.root); p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil {
			break
		}
		created = p
	}
	return created
}

// syncParents syncs the parent of each directory from dir up to created,
// which were created: each holds the new name of the one below. Nothing
// when created is "".
func syncParents(dir, created string) error {
	if created == "" {
		return nil
	}
	for p := dir; p != filepath.Dir(created); p = filepath.Dir(p) {
		if err := syncDir(filepath.Dir(p)); err != nil {
			return err
		}
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	err = f.Sync()
	return errors.Join(err, f.Close())
}

// fileWriter writes an upload's data; only Commit syncs it.
type fileWriter struct {
	file                         *os.File
	size                         int64
	bw                           *bufio.Writer
	closed, committed, cancelled bool
}

func (w *fileWriter) usable() error {
	switch {
	case w.closed:
		return errors.New("already closed")
	case w.committed:
		return errors.New("already committed")
	case w.cancelled:
		return errors.New("already cancelled")
	}
	return nil
}

func (w *fileWriter) Write(p []byte) (int, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	n, err := w.bw.Write(p)
	w.size += int64(n)
	return n, err
}

func (w *fileWriter) Size() int64 { return w.size }

// Close writes what is buffered and closes the file, without a sync: the
// upload goes on in a later request, or is committed, which syncs.
func (w *fileWriter) Close() error {
	if w.closed {
		return errors.New("already closed")
	}
	w.closed = true
	var err error
	if !w.committed && !w.cancelled {
		err = w.bw.Flush()
	}
	return errors.Join(err, w.file.Close())
}

func (w *fileWriter) Cancel(context.Context) error {
	if w.closed {
		return errors.New("already closed")
	}
	w.cancelled, w.closed = true, true
	_ = w.file.Close()
	return os.Remove(w.file.Name())
}

// Commit writes what is buffered and syncs the file: the blob's bytes are
// durable before the upload is moved to its blob path.
func (w *fileWriter) Commit(context.Context) error {
	if err := w.usable(); err != nil {
		return err
	}
	if err := w.bw.Flush(); err != nil {
		return err
	}
	if err := w.file.Sync(); err != nil {
		return err
	}
	w.committed = true
	return nil
}
