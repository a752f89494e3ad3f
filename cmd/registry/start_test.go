package main

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// maxInitBytes bounds what one of our packages may allocate while the
// process starts. Every command pays for it, `registry version` included:
// a regexp compiled into a package-level variable costs tens of kilobytes
// (compile it on first use with sync.OnceValue instead).
const maxInitBytes = 4 << 10

// maxStartBytes bounds what the initialisation of every package linked into
// the command allocates, dependencies included (3.6 MB now; the Go heap's
// first GC goal is 4 MB). Each kilobyte is paid by `registry scan` too, in
// page faults and GC work: a dependency whose package variables compile
// regexps or build tables costs every command (see bench/README.md, "where
// the start of registry scan goes").
const maxStartBytes = 4 << 20

// TestStartAllocatesLittle builds the command as users get it (the test
// binary will not do: the race detector, which the suite runs under, makes
// some packages allocate megabytes more at start), runs `registry version`
// with GODEBUG=inittrace=1 and checks what the initialisation of each of our
// packages, and of all packages together, allocates.
func TestStartAllocatesLittle(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "registry")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build, err, out)
	}
	cmd := exec.CommandContext(t.Context(), bin, "version")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, stderr.Bytes())
	}
	type pkgInit struct {
		path  string
		bytes int
	}
	var (
		all, ours, total int
		heaviest         []pkgInit
	)
	sc := bufio.NewScanner(&stderr)
	for sc.Scan() {
		// init PKG @T ms, C ms clock, N bytes, M allocs
		f := strings.Fields(sc.Text())
		if len(f) != 11 || f[0] != "init" || f[8] != "bytes," {
			continue
		}
		all++
		n, err := strconv.Atoi(f[7])
		if err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		total += n
		heaviest = append(heaviest, pkgInit{f[1], n})
		if !strings.HasPrefix(f[1], "github.com/portcullis/portcullis/") {
			continue
		}
		ours++
		if n > maxInitBytes {
			t.Errorf("%s allocates %d bytes (%s allocs) at start, want at most %d", f[1], n, f[9], maxInitBytes)
		}
	}
	if all == 0 || ours == 0 {
		t.Fatalf("found %d init lines, %d of our packages, in:\n%s", all, ours, stderr.Bytes())
	}
	if total > maxStartBytes {
		slices.SortFunc(heaviest, func(a, b pkgInit) int { return cmp.Compare(b.bytes, a.bytes) })
		var top strings.Builder
		for _, p := range heaviest[:min(8, len(heaviest))] {
			fmt.Fprintf(&top, "\n  %8d  %s", p.bytes, p.path)
		}
		t.Errorf("the %d packages with initialisation work allocate %d bytes at start, want at most %d; the heaviest:%s", all, total, maxStartBytes, top.String())
	}
}
