// Package filesystem is distribution's filesystem storage driver with the
// syncs that make an acknowledged push durable, and none that only slow
// it down.
//
// distribution's driver syncs every file it writes, then its directory: a
// small-image push pays about 60 fsyncs, two thirds of them for upload
// state (the time an upload started, the hash state saved after every
// chunk, and the upload's data at every chunk) that no acknowledged push
// needs. It also renames a committed upload to its blob path without
// syncing the directory, so the blob's name is not durable.
//
// This driver changes three things and leaves everything else to
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
//
// Everything a 201 acknowledges is therefore durable before the registry
// answers: the blob data (synced at commit, then its name by Move), and
// each link, manifest and tag (written by distribution's PutContent, which
// syncs the file and its directory).
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
	root string
}

var _ storagedriver.StorageDriver = (*Driver)(nil)

// New returns a driver storing under root, which must exist.
func New(root string) (*Driver, error) {
	d, err := filesystem.FromParameters(map[string]any{"rootdirectory": root})
	if err != nil {
		return nil, err
	}
	return &Driver{StorageDriver: d, root: root}, nil
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
// syncs; everything else as distribution's driver does (file and directory
// synced).
func (d *Driver) PutContent(ctx context.Context, path string, contents []byte) error {
	if !uploadState(path) {
		return d.StorageDriver.PutContent(ctx, path, contents)
	}
	full, err := d.fullPath(path)
	if err != nil {
		return err
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
	// The highest directory MkdirAll will create, if any.
	dir, created := filepath.Dir(dst), ""
	for p := dir; len(p) > len(d.root); p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil {
			break
		}
		created = p
	}
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	if err := os.Rename(src, dst); err != nil {
		return err
	}
	syncs := []string{dir}
	if created != "" {
		for p := dir; p != filepath.Dir(created); p = filepath.Dir(p) {
			syncs = append(syncs, filepath.Dir(p))
		}
	}
	for _, p := range syncs {
		if err := syncDir(p); err != nil {
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
