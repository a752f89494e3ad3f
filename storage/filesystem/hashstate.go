package filesystem

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// distribution saves an upload's hash state every time it closes the
// upload's writer (…/_uploads/<id>/hashstates/<alg>/<offset>: after the
// POST that starts the upload, after each PATCH, and once more inside the
// commit, just before it deletes the upload's directory), and looks for the
// one at the data's size when the upload goes on (a listing and a read).
// On the filesystem, which one registry process serves, that state lives in
// the process's memory instead: per blob, a directory and three files made
// and deleted, a listing and a read fewer. The state after 0 bytes is not
// kept (distribution starts a hash afresh there).
//
// A state that is lost (a restart, or more uploads in flight than
// maxHashStates, past which states go to files as before) only costs a
// hash of the upload's data at its commit: distribution, not finding the
// state at the data's size, reads the data again to verify its digest.
// An upload's activity, by which the collector and distribution's purge
// of old uploads tell an abandoned one, stays visible in its data and
// startedat files.

// maxHashStates bounds the uploads whose hash state is kept in memory.
const maxHashStates = 10000

// hashStates are the hash states of uploads in flight, by upload directory.
type hashStates struct {
	mu sync.Mutex
	m  map[string]hashState
}

type hashState struct {
	alg    string
	offset int64
	state  []byte
}

// parseHashState splits …/_uploads/<id>/hashstates/<alg>[/<offset>] into
// the upload's directory, the algorithm and the offset (-1 for the
// algorithm's directory).
func parseHashState(path string) (dir, alg string, offset int64, ok bool) {
	i := strings.LastIndex(path, "/_uploads/")
	if i < 0 {
		return "", "", 0, false
	}
	id, rest, _ := strings.Cut(path[i+len("/_uploads/"):], "/")
	rest, ok = strings.CutPrefix(rest, "hashstates/")
	if id == "" || !ok {
		return "", "", 0, false
	}
	alg, off, hasOffset := strings.Cut(rest, "/")
	if alg == "" {
		return "", "", 0, false
	}
	offset = -1
	if hasOffset {
		n, err := strconv.ParseInt(off, 10, 64)
		if err != nil || n < 0 || strconv.FormatInt(n, 10) != off {
			return "", "", 0, false
		}
		offset = n
	}
	return path[:i+len("/_uploads/")+len(id)], alg, offset, true
}

// put keeps the state at path, if path is a hash state's, and reports
// whether it was taken (false: store it as a file).
func (h *hashStates) put(path string, state []byte) bool {
	dir, alg, offset, ok := parseHashState(path)
	if !ok || offset < 0 {
		return false
	}
	if offset == 0 {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, kept := h.m[dir]; !kept && len(h.m) >= maxHashStates {
		return false
	}
	h.m[dir] = hashState{alg: alg, offset: offset, state: append([]byte(nil), state...)}
	return true
}

// get returns the state kept at path.
func (h *hashStates) get(path string) ([]byte, bool) {
	dir, alg, offset, ok := parseHashState(path)
	if !ok || offset < 0 {
		return nil, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s, kept := h.m[dir]
	if !kept || s.alg != alg || s.offset != offset {
		return nil, false
	}
	return append([]byte(nil), s.state...), true
}

// list returns the path of the state kept under the hash states directory
// dir (…/hashstates/<alg>).
func (h *hashStates) list(dir string) (string, bool) {
	upload, alg, offset, ok := parseHashState(dir)
	if !ok || offset >= 0 {
		return "", false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s, kept := h.m[upload]
	if !kept || s.alg != alg {
		return "", false
	}
	return dir + "/" + strconv.FormatInt(s.offset, 10), true
}

// forget drops the states of every upload at or under path, deleted.
func (h *hashStates) forget(path string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.m) == 0 {
		return
	}
	if _, kept := h.m[path]; kept {
		delete(h.m, path)
		return
	}
	prefix := strings.TrimSuffix(path, "/") + "/"
	for dir := range h.m {
		if strings.HasPrefix(dir, prefix) {
			delete(h.m, dir)
		}
	}
}

// List returns the entries of the directory at path; for a hash states
// directory whose upload's state is kept in memory, that state alone (the
// latest: once an upload's state is kept, every later one is).
func (d *Driver) List(ctx context.Context, path string) ([]string, error) {
	if p, ok := d.states.list(path); ok {
		return []string{p}, nil
	}
	return d.StorageDriver.List(ctx, path)
}

// Delete removes path and everything under it, and the hash states kept
// for uploads there.
func (d *Driver) Delete(ctx context.Context, path string) error {
	d.states.forget(path)
	if d.deleteUpload(path) {
		return nil
	}
	return d.StorageDriver.Delete(ctx, path)
}

// deleteUpload removes path if it is an upload's directory as a commit
// leaves it (its startedat; its data too if it was cancelled), by name,
// in three calls where a walk of the tree takes eight, and reports
// whether it did. When the directory holds anything else, or is not
// there, the general Delete does the rest and answers.
func (d *Driver) deleteUpload(path string) bool {
	_, id, found := strings.Cut(path, "/_uploads/")
	if !found || strings.Contains(id, "/") || id == "." || id == ".." || !validPath(path) {
		return false
	}
	full := filepath.Join(d.root, path)
	for _, name := range []string{"startedat", "data"} {
		if err := unix.Unlink(full + "/" + name); err != nil && err != unix.ENOENT {
			return false
		}
	}
	return unix.Rmdir(full) == nil
}
