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
// This driver changes what follows and leaves the rest (reads, listings,
// deletes, writers of other paths) to distribution's driver:
//   - An upload's hash states are kept in memory (hashstate.go). Its
//     startedat is written without syncs, by a write to a temporary file
//     and a rename, so readers never see a partial file. After a power cut an upload may have lost its
//     state: the client's next request for it fails, and it starts the upload
//     again. No push was acknowledged with that state.
//   - An upload's data is synced once (fdatasync), when the upload is
//     committed, not every time a chunk's writer is closed. While it is
//     written, every 8 MiB is handed to the disk without waiting
//     (sync_file_range), so that the commit's sync has little left to do.
//   - PutContent of anything else (links, manifests, tags) writes a
//     temporary file, syncs its contents (fdatasync) and renames it: a name
//     never points at contents a power cut could lose. The exception is a
//     new link written under a request's Barrier (below): see writeLink.
//   - The names: after Move (which commits an upload to its blob path) and
//     PutContent, the directory that received the name and the parent of
//     each directory the write created are synced, so the file survives with
//     its name (distribution syncs neither the blob's directory nor a new
//     directory's name).
//
// A write request (internal/front) defers the names' syncs to a Barrier
// carried by its context: the writes sync their contents as they go, and
// before the request's success is answered one syncfs(2) of the root's
// filesystem, shared by every request waiting at that moment, makes all
// their names durable (Barrier.Wait; if it fails, the request answers 500
// and acknowledges nothing). A write without a barrier in its context
// (replication, the scanner, the collector, the cache, or a write that
// begins after its request's Wait) syncs its names itself, as above.
//
// Everything a 201 acknowledges is therefore durable before the registry
// answers, on any filesystem, journaled or not: the blob data (synced at
// commit), each link, manifest and tag (synced before its rename), and all
// their names and the directories above them (synced by the request's
// barrier, or by the write itself). The syncfs also writes back whatever
// else of that filesystem is dirty, from this registry or not: put the
// storage root on a filesystem of its own for the shortest syncs.
//
// Links (the files named "link" that hold a digest: a repository's layers,
// revisions and tags) are never written empty, so a link found empty is a
// link a power cut interrupted before its request was answered: reads
// (GetContent, Stat) report it missing, as it was before that request.
//
// It must not import anything of Portcullis.
package filesystem

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/google/uuid"
	"golang.org/x/sys/unix"
)

// Driver stores under a root directory, as distribution's filesystem driver.
type Driver struct {
	storagedriver.StorageDriver
	root string
	// concat: root+path is clean for a clean path (see readPath).
	concat  bool
	group   *groupSync    // syncs of root's filesystem, for barriers
	readers chan struct{} // bounds the reads in the kernel at once (read.go)
	states  hashStates    // uploads' hash states (hashstate.go)
	// datasync syncs a file's contents before its rename (fdatasync;
	// counted in tests).
	datasync func(*os.File) error
}

var _ storagedriver.StorageDriver = (*Driver)(nil)

// New returns a driver storing under root, which must exist. The driver
// keeps root open, to sync its filesystem for barriers.
func New(root string) (*Driver, error) {
	d, err := filesystem.FromParameters(map[string]any{"rootdirectory": root})
	if err != nil {
		return nil, err
	}
	dir, err := os.Open(root)
	if err != nil {
		return nil, fmt.Errorf("open storage root: %w", err)
	}
	return &Driver{StorageDriver: d, root: root, concat: concatenable(root), group: newGroupSync(func() error { return syncfs(dir) }),
		readers: make(chan struct{}, maxReaders), datasync: fdatasync, states: hashStates{m: map[string]hashState{}}}, nil
}

// syncfs writes back everything of f's filesystem, and reports any
// writeback error since the last syncfs through f.
func syncfs(f *os.File) error { return onFD(f, "syncfs", unix.Syncfs) }

// fdatasync writes back f's data and what reading it needs (its size).
func fdatasync(f *os.File) error { return onFD(f, "fdatasync", unix.Fdatasync) }

// onFD calls call with f's descriptor, again while it is interrupted.
func onFD(f *os.File, op string, call func(fd int) error) error {
	c, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := c.Control(func(fd uintptr) {
		for {
			if serr = call(int(fd)); serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: op, Path: f.Name(), Err: serr}
	}
	return nil
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

// isLink reports whether path is a link of distribution's layout: a file
// named link, which holds a digest.
func isLink(path string) bool { return strings.HasSuffix(path, "/link") }

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

// PutContent stores contents at path, by a write to a temporary file and a
// rename, so readers never see a partial file. Upload state is written
// without syncs. Anything else has its contents synced before the rename
// (a name never points at contents that a power cut could lose), then its
// name: the directory that receives it and the parent of each directory
// the write created, at once or, under an open Barrier, at the barrier.
func (d *Driver) PutContent(ctx context.Context, path string, contents []byte) error {
	full, err := d.fullPath(path)
	if err != nil {
		return err
	}
	if d.states.put(path, contents) {
		return nil
	}
	dir := filepath.Dir(full)
	if uploadState(path) {
		if _, err := d.mkdirs(dir); err != nil {
			return err
		}
		return d.writeRename(full, contents, false)
	}
	b := d.barrierOf(ctx)
	if b != nil {
		defer b.done()
	}
	created, err := d.mkdirs(dir)
	if err != nil {
		return err
	}
	if b != nil && isLink(path) && len(contents) > 0 {
		err = d.writeLink(full, contents)
	} else {
		err = d.writeRename(full, contents, true)
	}
	if err != nil {
		return err
	}
	return syncNames(b, dir, created)
}

// writeRename writes contents to a new temporary file beside full, syncs
// it when durable, and renames it to full.
func (d *Driver) writeRename(full string, contents []byte, durable bool) error {
	tmp := full + "." + uuid.NewString() + ".tmp"
	f, err := openFile(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL)
	if err != nil {
		return err
	}
	_, err = f.Write(contents)
	if err == nil && durable {
		err = d.datasync(f)
	}
	if err = errors.Join(err, f.Close()); err == nil {
		err = os.Rename(tmp, full)
	}
	if err != nil {
		return errors.Join(err, removeIfExists(tmp))
	}
	return nil
}

// writeLink stores a link under an open barrier, whose sync of the
// filesystem makes both its contents and its name durable before the
// request is answered. A new link is written to a temporary file and
// renamed to its name only if that name is free, without a sync of its
// own: a power cut before the barrier's sync may leave it empty, which
// reads take for missing, and no request acknowledged it. A link that
// exists already is kept when it holds contents (the same link written
// again: the barrier's sync still covers it, should its writer not have
// passed its own barrier yet), and otherwise replaced by contents synced
// first, as writeRename does, since a power cut must not empty a link that
// was acknowledged.
func (d *Driver) writeLink(full string, contents []byte) error {
	tmp := full + "." + uuid.NewString() + ".tmp"
	f, err := openFile(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL)
	if err != nil {
		return err
	}
	_, err = f.Write(contents)
	if err == nil {
		err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, full, unix.RENAME_NOREPLACE)
		switch {
		case err == nil:
			return f.Close()
		case errors.Is(err, unix.EEXIST):
			var old []byte
			if old, err = os.ReadFile(full); err == nil && bytes.Equal(old, contents) {
				return errors.Join(f.Close(), os.Remove(tmp))
			}
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS):
			err = nil // a filesystem without RENAME_NOREPLACE: replace, synced
		}
	}
	if err == nil {
		err = d.datasync(f)
	}
	if err = errors.Join(err, f.Close()); err == nil {
		err = os.Rename(tmp, full)
	}
	if err != nil {
		return errors.Join(err, removeIfExists(tmp))
	}
	return nil
}

// openFile opens a regular file for writing as os.OpenFile does, without
// offering it to the network poller first (os.OpenFile's six system calls
// for a regular file; two here): its writes block, as a regular file's do
// anyway.
func openFile(path string, flag int) (*os.File, error) {
	for {
		fd, err := unix.Open(path, flag|unix.O_CLOEXEC, 0o666)
		switch {
		case err == nil:
			return os.NewFile(uintptr(fd), path), nil
		case err != unix.EINTR:
			return nil, &fs.PathError{Op: "open", Path: path, Err: err}
		}
	}
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
	if _, err := d.mkdirs(filepath.Dir(full)); err != nil {
		return nil, err
	}
	f, err := openFile(full, unix.O_WRONLY|unix.O_CREAT)
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
	return &fileWriter{file: f, size: size, started: size, bw: bufio.NewWriterSize(f, 64<<10)}, nil
}

// Move renames sourcePath to destPath, then syncs the directory that
// received the name and the parent of each directory it created, so that
// the name survives a power cut: at once or, under an open Barrier, at the
// barrier. The source's data is synced by whoever wrote it (an upload,
// when it was committed).
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
	b := d.barrierOf(ctx)
	if b != nil {
		defer b.done()
	}
	dir := filepath.Dir(dst)
	created, err := d.mkdirs(dir)
	if err != nil {
		return err
	}
	if err := os.Rename(src, dst); err != nil {
		return err
	}
	return syncNames(b, dir, created)
}

// mkdirs makes dir and the directories above it that are missing, under
// the root, as os.MkdirAll does, and returns the highest it made ("" when
// dir existed). It starts at dir, not at the root: most directories a
// write needs exist, and then one mkdir says so. A name that exists is
// taken for a directory (distribution's layout never puts a file where a
// directory goes; the write in it would fail).
func (d *Driver) mkdirs(dir string) (string, error) {
	if len(dir) <= len(d.root) {
		return "", nil // the root, which exists
	}
	err := os.Mkdir(dir, 0o777)
	switch {
	case err == nil:
		return dir, nil
	case errors.Is(err, fs.ErrExist):
		return "", nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", err
	}
	created, err := d.mkdirs(filepath.Dir(dir))
	if err != nil {
		return "", err
	}
	if err := os.Mkdir(dir, 0o777); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", err
	}
	if created == "" {
		created = dir
	}
	return created, nil
}

// syncNames makes a name written in dir durable, with each directory
// created from created down to dir: at once, or nothing when b, an open
// barrier, will sync the filesystem.
func syncNames(b *Barrier, dir, created string) error {
	if b != nil {
		return nil
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	return syncParents(dir, created)
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

// writeback is how many bytes of an upload's data are written before the
// writer asks the kernel to start writing them to disk, without waiting:
// the disk works while the rest arrives, the commit's sync has little
// left to write, and no sync of the filesystem meets a large backlog.
const writeback = 8 << 20

// fileWriter writes an upload's data; only Commit syncs it.
type fileWriter struct {
	file                         *os.File
	size                         int64
	started                      int64 // bytes of the file whose writeback has started
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
	if written := w.size - int64(w.bw.Buffered()); err == nil && written-w.started >= writeback {
		// Advice only: a failure leaves the work to the commit's sync.
		_ = onFD(w.file, "sync_file_range", func(fd int) error {
			return unix.SyncFileRange(fd, w.started, written-w.started, unix.SYNC_FILE_RANGE_WRITE)
		})
		w.started = written
	}
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
	if err := fdatasync(w.file); err != nil {
		return err
	}
	w.committed = true
	return nil
}
