package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// maxInitBytes bounds what one of our packages may allocate while the
// process starts. Every command pays for it, `registry version` included:
// a regexp compiled into a package-level variable costs tens of kilobytes
// (compile it on first use with sync.OnceValue instead).
const maxInitBytes = 4 << 10

// TestStartAllocatesLittle runs this test binary, which links every package
// of the command, with GODEBUG=inittrace=1 and checks what the
// initialisation of each of our packages allocates.
func TestStartAllocatesLittle(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, stderr.Bytes())
	}
	var all, ours int
	sc := bufio.NewScanner(&stderr)
	for sc.Scan() {
		// init PKG @T ms, C ms clock, N bytes, M allocs
		f := strings.Fields(sc.Text())
		if len(f) != 11 || f[0] != "init" || f[8] != "bytes," {
			continue
		}
		all++
		if !strings.HasPrefix(f[1], "github.com/portcullis/portcullis/") {
			continue
		}
		ours++
		n, err := strconv.Atoi(f[7])
		if err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if n > maxInitBytes {
			t.Errorf("%s allocates %d bytes (%s allocs) at start, want at most %d", f[1], n, f[9], maxInitBytes)
		}
	}
	if all == 0 || ours == 0 {
		t.Fatalf("found %d init lines, %d of our packages, in:\n%s", all, ours, stderr.Bytes())
	}
}
