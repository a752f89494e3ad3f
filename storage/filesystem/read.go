package filesystem

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
)

// Reads (GetContent, Reader, Stat) go straight to the file system: every
// manifest and blob read makes several of them (a tag's link, a revision's
// link, the blob's stat), and distribution's driver spends more than the
// system calls themselves around each one: a tracing span, a path regexp, a
// latency histogram and a lock, then os.Open, which makes six system calls
// for a regular file (open, four fcntl and an epoll_ctl to try the file in
// the network poller) where open, read and close are enough. The answers,
// errors included, are distribution's.

// maxReaders bounds the reads blocked in the kernel at once, as
// distribution's driver bounds its calls (a thread each).
const maxReaders = 100

// validPath reports whether path is a driver path, as
// storagedriver.PathRegexp (^(/[A-Za-z0-9._-]+)+$) matches it.
func validPath(path string) bool {
	if path == "" || path[0] != '/' {
		return false
	}
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '/':
			if i+1 == len(path) || path[i+1] == '/' {
				return false
			}
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// readPath returns the file of path, or the error distribution's driver
// returns for an invalid path.
func (d *Driver) readPath(path string) (string, error) {
	if !validPath(path) {
		return "", storagedriver.InvalidPathError{Path: path, DriverName: d.Name()}
	}
	if d.concat && !dotSegment(path) {
		// What filepath.Join returns, without cleaning a path that is
		// clean: Join cleans root+"/"+path, whose "//" makes Clean
		// build a copy (two allocations) for every read.
		return d.root + path, nil
	}
	return filepath.Join(d.root, path), nil
}

// concatenable reports whether root+path is clean for every clean path
// (absolute, no dot segments).
func concatenable(root string) bool {
	return filepath.Clean(root+"/x") == root+"/x"
}

// dotSegment reports whether a valid path has a "." or ".." segment.
func dotSegment(path string) bool {
	for seg := range strings.SplitSeq(path[1:], "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// pathError translates an error of the file system on path as
// distribution's driver does: a missing file is PathNotFoundError, anything
// else a storagedriver.Error.
func (d *Driver) pathError(op, path, full string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return storagedriver.PathNotFoundError{Path: path, DriverName: d.Name()}
	}
	return storagedriver.Error{DriverName: d.Name(), Detail: &fs.PathError{Op: op, Path: full, Err: err}}
}

// open opens path for reading, the descriptor, not an *os.File, holding
// one of the reader slots: call release when done reading.
func (d *Driver) open(path string) (fd int, full string, err error) {
	if full, err = d.readPath(path); err != nil {
		return -1, "", err
	}
	d.readers <- struct{}{}
	for {
		fd, err = syscall.Open(full, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err == nil {
			return fd, full, nil
		}
		if !errors.Is(err, syscall.EINTR) {
			d.release()
			return -1, full, d.pathError("open", path, full, err)
		}
	}
}

// release gives back the reader slot open took.
func (d *Driver) release() { <-d.readers }

// GetContent returns the content of the file at path.
func (d *Driver) GetContent(_ context.Context, path string) ([]byte, error) {
	if state, ok := d.states.get(path); ok {
		return state, nil
	}
	fd, full, err := d.open(path)
	if err != nil {
		return nil, err
	}
	defer d.release()
	defer syscall.Close(fd) //nolint:errcheck // read-only: nothing to lose
	// Links and tags, most of what is read, are under 100 bytes: read into
	// a buffer on the stack, then copied out whole (one allocation). A
	// read of a regular file that returns less than asked for has reached
	// its end (Linux returns short only at the end of a file, or when a
	// fatal signal ends the process): no read to see the end.
	var stack [512]byte
	buf := stack[:0]
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, max(cap(buf), 32<<10))
		}
		want := cap(buf) - len(buf)
		n, err := syscall.Read(fd, buf[len(buf):cap(buf)])
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			return nil, d.pathError("read", path, full, err)
		}
		buf = buf[:len(buf)+n]
		if n < want {
			if len(buf) == 0 && isLink(path) {
				// An interrupted link (driver.go): none.
				return nil, storagedriver.PathNotFoundError{Path: path, DriverName: d.Name()}
			}
			return slices.Clone(buf[:len(buf):len(buf)]), nil
		}
	}
}

// Reader returns the file at path as an *os.File positioned at offset (so
// that a server may send it with sendfile).
func (d *Driver) Reader(_ context.Context, path string, offset int64) (io.ReadCloser, error) {
	if offset < 0 {
		return nil, storagedriver.InvalidOffsetError{Path: path, Offset: offset, DriverName: d.Name()}
	}
	fd, full, err := d.open(path)
	if err != nil {
		return nil, err
	}
	d.release() // reads from the file are the caller's
	// A blocking descriptor of a regular file: os.NewFile leaves it out
	// of the network poller without trying it.
	f := os.NewFile(uintptr(fd), full)
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			_ = f.Close()
			return nil, storagedriver.Error{DriverName: d.Name(), Detail: err}
		}
	}
	return f, nil
}

// Stat returns the file info of path.
func (d *Driver) Stat(_ context.Context, path string) (storagedriver.FileInfo, error) {
	var full string
	if path == "/" {
		full = d.root
	} else {
		var err error
		if full, err = d.readPath(path); err != nil {
			return nil, err
		}
	}
	d.readers <- struct{}{}
	defer func() { <-d.readers }()
	fi, err := os.Stat(full)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, d.pathError("stat", path, full, err)
	}
	if fi.Size() == 0 && fi.Mode().IsRegular() && isLink(path) {
		// An interrupted link (driver.go): none.
		return nil, storagedriver.PathNotFoundError{Path: path, DriverName: d.Name()}
	}
	return fileInfo{FileInfo: fi, path: path}, nil
}

// fileInfo is a file's info as distribution's driver gives it: the driver
// path, and no size for a directory.
type fileInfo struct {
	os.FileInfo
	path string
}

var _ storagedriver.FileInfo = fileInfo{}

func (fi fileInfo) Path() string { return fi.path }

func (fi fileInfo) Size() int64 {
	if fi.IsDir() {
		return 0
	}
	return fi.FileInfo.Size()
}

func (fi fileInfo) ModTime() time.Time { return fi.FileInfo.ModTime() }

func (fi fileInfo) IsDir() bool { return fi.FileInfo.IsDir() }
