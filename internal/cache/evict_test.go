package cache_test

import (
	"context"
	"testing"
	"time"

	ggcrv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/internal/cache"
	"github.com/portcullis/portcullis/internal/outbox"
)

// blobsOf returns the config and layer digests of img.
func blobsOf(t *testing.T, img ggcrv1.Image) []digest.Digest {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	out := []digest.Digest{digest.Digest(m.Config.Digest.String())}
	for _, l := range m.Layers {
		out = append(out, digest.Digest(l.Digest.String()))
	}
	return out
}

// sizeOf is what the cache counts for img: its manifest and blobs.
func sizeOf(t *testing.T, img ggcrv1.Image) int64 {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := img.RawManifest()
	n := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n
}

// TestEvictMaxAge: a manifest nobody pulled for longer than maxAge goes,
// with its tags, referrers and signature tag; its blobs stay; a manifest
// pulled since stays.
func TestEvictMaxAge(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *cache.Spec) { s.MaxAge = 24 * time.Hour })
	ctx := context.Background()
	const oldName, newName = prefix + "/library/old", prefix + "/library/new"
	s := pushSigned(t, e.up, "library/old", "v1")
	fresh := randomImage(t, 512, 1)
	freshDigest := e.up.push("library/new", "v1", fresh)

	e.pull(oldName, "v1")
	e.waitComplete(oldName, s.image)
	oldBlobs := func() []digest.Digest {
		named := e.repo(oldName)
		ms, _ := named.Manifests(ctx)
		m, err := ms.Get(ctx, s.image)
		if err != nil {
			t.Fatal(err)
		}
		var out []digest.Digest
		for _, b := range m.References() {
			out = append(out, b.Digest)
		}
		return out
	}()
	e.clock.Advance(20 * time.Hour)
	e.pull(newName, "v1")
	e.waitComplete(newName, freshDigest)

	e.clock.Advance(5 * time.Hour) // old: 25h since its pull; new: 5h
	n, err := e.set.Evict(ctx, prefix)
	if err != nil || n != 1 {
		t.Fatalf("Evict: %d, %v; want 1 manifest removed", n, err)
	}
	if e.manifest(oldName, s.image) != nil || e.tag(oldName, "v1") != "" {
		t.Errorf("old manifest or its tag still there")
	}
	if e.manifest(oldName, s.sbom) != nil {
		t.Errorf("referrer of the evicted manifest still there")
	}
	if e.tag(oldName, s.sigTag) != "" || e.manifest(oldName, s.sig) != nil {
		t.Errorf("signature tag of the evicted manifest still there")
	}
	for _, b := range oldBlobs {
		if !e.hasBlob(oldName, b) {
			t.Errorf("blob %s of the evicted manifest removed: blobs are left to garbage collection", b)
		}
	}
	if e.manifest(newName, freshDigest) == nil || e.tag(newName, "v1") != freshDigest {
		t.Errorf("recently pulled manifest evicted")
	}
	st, ok := e.set.Status(ctx, prefix).(cache.Status)
	if !ok || st.Manifests != 1 || st.Bytes != sizeOf(t, fresh) {
		t.Errorf("status after eviction: %+v, want 1 manifest of %d bytes", st, sizeOf(t, fresh))
	}
	del := e.events.wait(t, func(ev outbox.Event) bool {
		return ev.Kind == outbox.KindDelete && ev.Repository == oldName && ev.Tag == "v1"
	})
	if del.Digest != "" {
		t.Errorf("untag event %+v names a digest", del)
	}
	// Pulled again, it comes back from the remote.
	if got := e.pull(oldName, "v1"); got != cache.Miss {
		t.Errorf("pull after eviction: %s, want miss", got)
	}
	now := e.clock.Now()
	e.events.wait(t, func(ev outbox.Event) bool { return ev.Digest == s.image && ev.Time.Equal(now) })
}

// TestEvictMaxSize: beyond maxSize the least recently pulled images go
// first.
func TestEvictMaxSize(t *testing.T) {
	t.Parallel()
	imgs := map[string]ggcrv1.Image{}
	var total int64
	for _, n := range []string{"a", "b", "c"} {
		imgs[n] = randomImage(t, 8<<10, 2)
		total += sizeOf(t, imgs[n])
	}
	e := newEnv(t, func(s *cache.Spec) { s.MaxSize = total - 1 })
	ctx := context.Background()
	digests := map[string]digest.Digest{}
	pull := func(n string) {
		t.Helper()
		e.pull(prefix+"/team/"+n, "v1")
	}
	for _, n := range []string{"a", "b", "c"} {
		digests[n] = e.up.push("team/"+n, "v1", imgs[n])
		pull(n)
		e.waitComplete(prefix+"/team/"+n, digests[n])
		e.clock.Advance(2 * time.Hour)
	}
	pull("a") // a is now the most recently pulled; b the least

	removed, err := e.set.Evict(ctx, prefix)
	if err != nil || removed != 1 {
		t.Fatalf("Evict: %d, %v; want 1 manifest removed", removed, err)
	}
	for _, n := range []string{"a", "b", "c"} {
		name := prefix + "/team/" + n
		kept := e.manifest(name, digests[n]) != nil
		if want := n != "b"; kept != want {
			t.Errorf("%s kept: %v, want %v", name, kept, want)
		}
		for _, b := range blobsOf(t, imgs[n]) {
			if !e.hasBlob(name, b) {
				t.Errorf("blob %s of %s removed", b, name)
			}
		}
	}
	if removed, err := e.set.Evict(ctx, prefix); err != nil || removed != 0 {
		t.Errorf("second Evict: %d, %v; want nothing more to remove", removed, err)
	}
	st, _ := e.set.Status(ctx, prefix).(cache.Status)
	if want := sizeOf(t, imgs["a"]) + sizeOf(t, imgs["c"]); st.Bytes != want || st.Manifests != 2 {
		t.Errorf("status: %d manifests, %d bytes; want 2, %d", st.Manifests, st.Bytes, want)
	}
}

// TestEvictMaxAgeUnderAnHour: with a maxAge shorter than the interval at
// which pull times are written, a manifest pulled all along is not evicted
// as if nobody had pulled it since its first pull.
func TestEvictMaxAgeUnderAnHour(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *cache.Spec) { s.MaxAge = 30 * time.Minute; s.TagTTL = time.Hour })
	ctx := context.Background()
	const name = prefix + "/library/busy"
	d := e.up.push("library/busy", "v1", randomImage(t, 512, 1))
	e.pull(name, "v1")
	e.waitComplete(name, d)
	for range 4 { // pulled every 10 minutes, 40 in all
		e.clock.Advance(10 * time.Minute)
		if got := e.pull(name, "v1"); got != cache.Hit {
			t.Fatalf("pull within tagTTL: %s, want hit", got)
		}
	}
	n, err := e.set.Evict(ctx, prefix)
	if err != nil || n != 0 {
		t.Errorf("Evict of a manifest pulled 10 minutes ago with maxAge 30m: %d removed, %v; want 0", n, err)
	}
	if e.tag(name, "v1") != d {
		t.Errorf("tag of a manifest pulled 10 minutes ago evicted")
	}
}

// TestStatusCounted: the status's count of what a cache holds is reused
// for a while (it walks the cache's state in the backend), and counted
// again after it or after an eviction.
func TestStatusCounted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	count := func() int {
		st, ok := e.set.Status(ctx, prefix).(cache.Status)
		if !ok {
			t.Fatal("no status")
		}
		return st.Manifests
	}
	a := e.up.push("library/a", "v1", randomImage(t, 256, 1))
	e.pull(prefix+"/library/a", "v1")
	e.waitComplete(prefix+"/library/a", a)
	if n := count(); n != 1 {
		t.Fatalf("status after one pull: %d manifests, want 1", n)
	}
	b := e.up.push("library/b", "v1", randomImage(t, 256, 1))
	e.pull(prefix+"/library/b", "v1")
	e.waitComplete(prefix+"/library/b", b)
	if n := count(); n != 1 {
		t.Errorf("status within 30s of the last count: %d manifests, want the count reused (1)", n)
	}
	e.clock.Advance(31 * time.Second)
	if n := count(); n != 2 {
		t.Errorf("status 31s later: %d manifests, want 2", n)
	}
}
