package filesystem

import (
	"path/filepath"
	"testing"
)

// TestReadPath: a read's file is filepath.Join of the root and the path,
// for clean and unclean roots and paths, with or without dot segments.
func TestReadPath(t *testing.T) {
	t.Parallel()
	paths := []string{"/docker/registry/v2/blobs/sha256/ab/abcd/data", "/a", "/a/./b", "/a/../b", "/..", "/.", "/a/.b/c.",
		"/a/..b", "/a/b/..", "/a/b/."}
	for _, root := range []string{t.TempDir(), "/", "/srv/data/", "/srv//data", "/srv/./data", ".", "data", "./data", "data/.."} {
		d := &Driver{root: root, concat: concatenable(root)}
		for _, p := range paths {
			got, err := d.readPath(p)
			if want := filepath.Join(root, p); err != nil || got != want {
				t.Errorf("root %q: readPath(%q) = %q, %v; want %q", root, p, got, err, want)
			}
		}
	}
}
