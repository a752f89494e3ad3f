package e2e

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestReplicationCrashMidBlob: A is killed (SIGKILL) while it uploads the
// 200 MiB layer of an image to B over a slow link, and restarted on the
// same data: the copy completes from A's outbox, the tag is put once, and
// no blob but the one cut short is sent twice.
func TestReplicationCrashMidBlob(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	b := startRegistry(t, startOptions{})
	link := startFaultProxy(t, b.URL())
	cfg := replPushConfig(link.URL(), "0s", `["prod/**"]`)
	a := startRegistry(t, startOptions{config: cfg})
	st := &replSites{crane: crane}

	const layerSize = 200 << 20
	data := make([]byte, layerSize)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, static.NewLayer(data, types.OCIUncompressedLayer))
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfgSize := int64(len(rawCfg))
	d := imageDigest(t, img)
	ref, err := name.ParseReference(a.Addr+"/prod/big:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}

	// 16 MiB/s: the layer takes over 12 s to cross the link.
	link.throttleUploads(16 << 20)
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push to A: %v", err)
	}
	data = nil
	replWait(t, "60 MiB of the layer sent to B", func() (bool, string) {
		n := link.uploaded()
		return n >= 60<<20, fmt.Sprintf("%d bytes sent", n)
	})
	replKill(t, a)
	cutAt := link.uploaded()
	if cutAt >= layerSize {
		t.Fatalf("the whole layer was sent (%d bytes) before A was killed", cutAt)
	}
	if got := st.replDigest(nil, link.Addr+"/prod/big:v1"); got != "" {
		t.Fatalf("B has prod/big:v1 (%s) before A restarted", got)
	}

	link.throttleUploads(0)
	a = startRegistry(t, startOptions{config: cfg, dataDir: a.DataDir})
	replWait(t, "prod/big:v1 at B after A's restart", func() (bool, string) {
		got := st.replDigest(nil, link.Addr+"/prod/big:v1")
		return got == d, fmt.Sprintf("B has %q, want %s", got, d)
	})
	if n := link.count(http.MethodPut, "/v2/prod/big/manifests/v1"); n != 1 {
		t.Errorf("tag PUTs at B: %d, want 1", n)
	}
	// Everything once, and the layer cut short once more at most.
	total := link.uploaded()
	if limit := int64(2*layerSize) + cfgSize + 64<<10; total > limit {
		t.Errorf("%d bytes sent to B (%d before the kill), want at most %d: the layer twice at most, the rest once", total, cutAt, limit)
	}
	t.Logf("sent to B: %d MiB before the kill, %d MiB in all", cutAt>>20, total>>20)
}

// TestReplicationDeadRemote: A pushes prod/** to C and to B. C's link
// accepts connections and never answers: every image still arrives at B
// while C hangs, and A's status shows C's rule with all its events
// pending and B's with none.
func TestReplicationDeadRemote(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	b, c := startRegistry(t, startOptions{}), startRegistry(t, startOptions{})
	toB, toC := startFaultProxy(t, b.URL()), startFaultProxy(t, c.URL())
	toC.setMode(hangAfterAccept)
	a := startRegistry(t, startOptions{config: fmt.Sprintf(`version: 1
remotes:
  - name: site-b
    url: %s
  - name: site-c
    url: %s
    timeout: 5m
replication:
  reconcileEvery: 0s
  rules:
    - name: to-c
      mode: push
      remote: site-c
      repositories: ["prod/**"]
    - name: to-b
      mode: push
      remote: site-b
      repositories: ["prod/**"]
`, toB.URL(), toC.URL())})
	st := &replSites{crane: crane}
	want := map[string]string{}
	for i := range 10 {
		_, tarPath := imageTarball(t)
		ref := fmt.Sprintf("prod/app-%d:v1", i)
		run(t, nil, crane, "push", "--insecure", tarPath, a.Addr+"/"+ref)
		want[ref] = st.replDigest(nil, a.Addr+"/"+ref)
	}
	replWait(t, "every image at B while C hangs", func() (bool, string) {
		missing := 0
		for ref, d := range want {
			if st.replDigest(nil, b.Addr+"/"+ref) != d {
				missing++
			}
		}
		pending := map[string]int{}
		for _, r := range replStatusOf(t, a.URL()).Rules {
			pending[r.Name] = r.Pending
		}
		return missing == 0 && pending["to-b"] == 0 && pending["to-c"] == 10,
			fmt.Sprintf("%d of 10 missing at B; pending %v (want to-b 0, to-c 10)", missing, pending)
	})
	if toC.acceptedConns() == 0 {
		t.Error("A never tried C")
	}
	if got := st.replDigest(nil, c.Addr+"/prod/app-0:v1"); got != "" {
		t.Errorf("C has prod/app-0:v1 (%s) through a hung link", got)
	}
}
