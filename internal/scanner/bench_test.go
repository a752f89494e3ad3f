package scanner

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/opencontainers/go-digest"
)

// BenchmarkScanSmallImage measures the server's scan of a small Debian image (a dpkg status
// file and os-release), the shared database loaded: reading its layer (new each time, so no
// inventory is cached), storing the inventory, the SBOM and the report as referrers over
// in-memory storage, and remembering it. The target is under 100 ms.
func BenchmarkScanSmallImage(b *testing.B) {
	h := newHarness(b, nil)
	h.importDB("Alpine", "Debian", "Go", "npm")
	status, err := os.ReadFile("../../scan/testdata/images/debian-status")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	const repo = "bench/deb"
	r := h.repo(repo)
	i := 0
	var last digest.Digest
	for b.Loop() {
		b.StopTimer()
		i++
		img := testImage(b, map[string]string{
			"var/lib/dpkg/status": string(status), "etc/os-release": "ID=debian\nVERSION_ID=\"12\"\n",
			"etc/hostname": fmt.Sprintf("bench-%d\n", i),
		})
		d := h.pushImage(repo, "", img)
		last = d
		raw, _ := img.RawManifest()
		mt, _ := img.MediaType()
		b.StartTimer()
		if err := h.svc.scanImage(ctx, r, repo, digest.Digest(d), string(mt), raw); err != nil {
			b.Fatal(err)
		}
	}
	if h.findings(repo, last) == 0 {
		b.Fatal("no findings: the image is not exercising the matcher")
	}
}
