package audit

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
)

// Rotation bounds an audit file. The zero value means the defaults.
type Rotation struct {
	// MaxSize is the size in bytes past which the file is rotated; default
	// 100 MiB.
	MaxSize int64
	// MaxFiles is how many rotated files (FILE.1 the newest ... FILE.N) are
	// kept; default 5.
	MaxFiles int
}

// Defaults of Rotation.
const (
	DefaultMaxSize  = 100 << 20
	DefaultMaxFiles = 5
)

// Open returns the writer for an audit destination as configured
// (auth.audit.file): "stdout", "stderr", or a file path opened as by
// OpenFile. Close the returned closer at shutdown; for stdout and stderr it
// does nothing. It returns nil writer for "".
func Open(dest string, rot Rotation, stdout, stderr io.Writer) (io.Writer, func() error, error) {
	nop := func() error { return nil }
	switch dest {
	case "":
		return nil, nop, nil
	case "stdout":
		return stdout, nop, nil
	case "stderr":
		return stderr, nop, nil
	}
	f, err := OpenFile(dest, rot)
	if err != nil {
		return nil, nop, err
	}
	return f, f.Close, nil
}

// File is an audit file that rotates by size: a write that would take it
// past MaxSize first renames it to FILE.1 (FILE.1 to FILE.2, and so on,
// dropping the oldest past MaxFiles) and starts a new one. A single write
// is never split. It is safe for concurrent use.
type File struct {
	path string
	rot  Rotation

	mu   sync.Mutex
	f    *os.File
	size int64
}

// OpenFile opens path for appending (mode 0600, created if missing) with
// rotation rot. It returns an error if the file cannot be opened.
func OpenFile(path string, rot Rotation) (*File, error) {
	if rot.MaxSize <= 0 {
		rot.MaxSize = DefaultMaxSize
	}
	if rot.MaxFiles <= 0 {
		rot.MaxFiles = DefaultMaxFiles
	}
	af := &File{path: path, rot: rot}
	if err := af.open(); err != nil {
		return nil, err
	}
	return af, nil
}

func (af *File) open() error {
	f, err := os.OpenFile(af.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open audit log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("open audit log: %w", err)
	}
	af.f, af.size = f, st.Size()
	return nil
}

// Write appends p, rotating first if p would take the file past MaxSize.
func (af *File) Write(p []byte) (int, error) {
	af.mu.Lock()
	defer af.mu.Unlock()
	if af.f == nil {
		return 0, errors.New("audit log closed")
	}
	if af.size > 0 && af.size+int64(len(p)) > af.rot.MaxSize {
		if err := af.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := af.f.Write(p)
	af.size += int64(n)
	return n, err
}

// rotate shifts FILE.i to FILE.i+1 (the last one is overwritten), FILE to
// FILE.1, and opens a new FILE. When a rename fails, it reopens FILE so
// later writes still land somewhere.
func (af *File) rotate() error {
	if err := af.f.Close(); err != nil {
		return fmt.Errorf("rotate audit log: %w", err)
	}
	af.f = nil
	name := func(i int) string { return af.path + "." + strconv.Itoa(i) }
	var err error
	for i := af.rot.MaxFiles - 1; i >= 1 && err == nil; i-- {
		err = os.Rename(name(i), name(i+1))
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
	}
	if err == nil {
		err = os.Rename(af.path, name(1))
	}
	if oerr := af.open(); oerr != nil {
		return oerr
	}
	if err != nil {
		return fmt.Errorf("rotate audit log: %w", err)
	}
	return nil
}

// Close closes the file.
func (af *File) Close() error {
	af.mu.Lock()
	defer af.mu.Unlock()
	if af.f == nil {
		return nil
	}
	err := af.f.Close()
	af.f = nil
	return err
}
