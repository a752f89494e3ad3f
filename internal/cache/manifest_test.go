package cache_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/internal/cache"
	"github.com/portcullis/portcullis/internal/outbox"
)

// TestTagMissHitRevalidate: a tag miss stores the manifest byte for byte
// and sets the tag; within tagTTL the tag is served without the remote;
// after tagTTL it costs one HEAD; a tag moved upstream serves the new
// digest.
func TestTagMissHitRevalidate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	const repo, name = "library/app", prefix + "/library/app"
	img := randomImage(t, 1024, 2)
	want := e.up.push(repo, "v1", img)
	raw, _ := img.RawManifest()

	if got := e.pull(name, "v1"); got != cache.Miss {
		t.Fatalf("first pull: %s, want miss", got)
	}
	if got := e.manifest(name, want); !bytes.Equal(got, raw) {
		t.Fatalf("stored manifest differs from the upstream's bytes:\n got %s\nwant %s", got, raw)
	}
	if got := digest.FromBytes(e.manifest(name, want)); got != want {
		t.Errorf("stored manifest digest %s, want %s", got, want)
	}
	if got := e.tag(name, "v1"); got != want {
		t.Errorf("tag v1 → %s, want %s", got, want)
	}
	e.waitComplete(name, want)

	e.up.reset()
	e.clock.Advance(4 * time.Minute)
	if got := e.pull(name, "v1"); got != cache.Hit {
		t.Errorf("pull within tagTTL: %s, want hit", got)
	}
	if n := e.up.count("", "/v2/"); n != 0 {
		t.Errorf("pull within tagTTL sent %d upstream requests, want 0", n)
	}

	e.clock.Advance(2 * time.Minute) // 6m since the check: past tagTTL
	if got := e.pull(name, "v1"); got != cache.Hit {
		t.Errorf("pull after tagTTL, tag unchanged: %s, want hit", got)
	}
	if n := e.up.count(http.MethodHead, "/manifests/v1"); n != 1 {
		t.Errorf("pull after tagTTL sent %d HEADs of the tag, want 1", n)
	}
	if n := e.up.count(http.MethodGet, "/manifests/") + e.up.count("", "/blobs/"); n != 0 {
		t.Errorf("pull after tagTTL of an unchanged tag fetched %d manifests or blobs, want 0", n)
	}
	e.up.reset()
	if got := e.pull(name, "v1"); got != cache.Hit {
		t.Errorf("pull right after the revalidation: %s, want hit", got)
	}
	if n := e.up.count("", "/v2/"); n != 0 {
		t.Errorf("pull right after the revalidation sent %d upstream requests, want 0", n)
	}

	img2 := randomImage(t, 1024, 2)
	moved := e.up.push(repo, "v1", img2)
	raw2, _ := img2.RawManifest()
	e.clock.Advance(6 * time.Minute)
	if got := e.pull(name, "v1"); got != cache.Miss {
		t.Errorf("pull of a moved tag: %s, want miss", got)
	}
	if got := e.tag(name, "v1"); got != moved {
		t.Errorf("moved tag v1 → %s, want %s", got, moved)
	}
	if got := e.manifest(name, moved); !bytes.Equal(got, raw2) {
		t.Errorf("moved tag's manifest differs from the upstream's bytes")
	}
	e.waitComplete(name, moved)
}

// TestPullByDigestCached: a cached digest is served without calling the
// remote, even a remote that fails; an uncached one is fetched once.
func TestPullByDigestCached(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	const name = prefix + "/team/app"
	img := randomImage(t, 512, 1)
	d := e.up.push("team/app", "v1", img)

	if got := e.pull(name, d.String()); got != cache.Miss {
		t.Fatalf("first pull by digest: %s, want miss", got)
	}
	if n := e.up.count(http.MethodGet, "/manifests/"+d.String()); n != 1 {
		t.Errorf("first pull by digest sent %d manifest GETs, want 1", n)
	}
	ev := e.waitComplete(name, d)
	if ev.Kind != outbox.KindPush || ev.Tag != "" {
		t.Errorf("event of a pull by digest: %+v, want a push without tag", ev)
	}
	e.up.reset()
	e.up.setFault(unavailable)
	e.clock.Advance(30 * 24 * time.Hour)
	if got := e.pull(name, d.String()); got != cache.Hit {
		t.Errorf("second pull by digest: %s, want hit", got)
	}
	if n := e.up.count("", "/v2/"); n != 0 {
		t.Errorf("pull of a cached digest sent %d upstream requests, want 0", n)
	}
}

// TestIndex: a multi-arch index keeps its digest and is stored before its
// children, which are fetched when asked for.
func TestIndex(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	const name = prefix + "/library/multi"
	idx, err := random.Index(256, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := e.up.pushIndex("library/multi", "v1", idx)
	raw, _ := idx.RawManifest()
	im, _ := idx.IndexManifest()

	if got := e.pull(name, "v1"); got != cache.Miss {
		t.Fatalf("pull of the index: %s, want miss", got)
	}
	if got := e.manifest(name, want); !bytes.Equal(got, raw) {
		t.Fatalf("stored index differs from the upstream's bytes")
	}
	if got := e.tag(name, "v1"); got != want {
		t.Errorf("tag v1 → %s, want the index %s", got, want)
	}
	e.waitComplete(name, want)
	for _, m := range im.Manifests {
		if e.manifest(name, digest.Digest(m.Digest.String())) != nil {
			t.Errorf("child %s stored with the index: children come on demand", m.Digest)
		}
	}

	child := digest.Digest(im.Manifests[1].Digest.String())
	e.up.reset()
	if got := e.pull(name, child.String()); got != cache.Miss {
		t.Errorf("pull of a child: %s, want miss", got)
	}
	if n := e.up.count(http.MethodGet, "/manifests/"); n != 1 {
		t.Errorf("pull of a child sent %d manifest GETs, want 1", n)
	}
	childImg, _ := idx.Image(im.Manifests[1].Digest)
	childRaw, _ := childImg.RawManifest()
	if got := e.manifest(name, child); !bytes.Equal(got, childRaw) {
		t.Errorf("stored child differs from the upstream's bytes")
	}
	e.waitComplete(name, child)
	layers, _ := childImg.Layers()
	for _, l := range layers {
		ld, _ := l.Digest()
		if !e.hasBlob(name, digest.Digest(ld.String())) {
			t.Errorf("layer %s of the child not stored after its event", ld)
		}
	}
	other := digest.Digest(im.Manifests[0].Digest.String())
	if e.manifest(name, other) != nil {
		t.Errorf("the child not asked for (%s) was stored", other)
	}
}

// TestStaleIfError: while the remote fails, a tag past its TTL is served
// stale for staleIfError; after that, or with staleIfError 0, the client
// gets 502 naming the remote.
func TestStaleIfError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		stale   time.Duration
		advance time.Duration
		want    cache.Result // "": 502
	}{
		{name: "within staleIfError", stale: time.Hour, advance: 30 * time.Minute, want: cache.Stale},
		{name: "just before TTL+staleIfError", stale: time.Hour, advance: 64 * time.Minute, want: cache.Stale},
		{name: "past TTL+staleIfError", stale: time.Hour, advance: 66 * time.Minute},
		{name: "staleIfError 0", stale: 0, advance: 6 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(s *cache.Spec) { s.StaleIfError = tt.stale })
			const name = prefix + "/library/app"
			d := e.up.push("library/app", "v1", randomImage(t, 256, 1))
			e.pull(name, "v1")
			e.waitComplete(name, d)
			e.up.setFault(unavailable)
			e.clock.Advance(tt.advance)
			staleBefore := e.counter("portcullis_cache_requests_total", map[string]string{"cache": prefix, "kind": "manifest", "result": "stale"})

			res, err := e.set.Manifest(context.Background(), name, "v1")
			staleAfter := e.counter("portcullis_cache_requests_total", map[string]string{"cache": prefix, "kind": "manifest", "result": "stale"})
			if tt.want != "" {
				if err != nil || res != tt.want {
					t.Fatalf("Manifest: %q, %v; want %q", res, err, tt.want)
				}
				if staleAfter != staleBefore+1 {
					t.Errorf("stale metric %v → %v, want one more", staleBefore, staleAfter)
				}
				if got := e.tag(name, "v1"); got != d {
					t.Errorf("tag v1 → %s while stale, want %s", got, d)
				}
				return
			}
			if err == nil {
				t.Fatalf("Manifest: %q, want an error", res)
			}
			status, code, msg := clientError(t, err)
			if status != http.StatusBadGateway || !strings.Contains(msg, remoteName) {
				t.Errorf("client told %d %s %q; want 502 naming remote %s", status, code, msg, remoteName)
			}
			if staleAfter != staleBefore {
				t.Errorf("stale metric grew on an error")
			}
		})
	}
}

// TestManifestNotFound: what the remote does not have is 404
// MANIFEST_UNKNOWN naming the remote; nothing is stored.
func TestManifestNotFound(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	const name = prefix + "/library/app"
	e.up.push("library/app", "v1", randomImage(t, 256, 1))
	missing := digest.FromString("missing")
	for _, ref := range []string{"nope", missing.String()} {
		_, err := e.set.Manifest(context.Background(), name, ref)
		if err == nil {
			t.Fatalf("Manifest(%s): no error", ref)
		}
		status, code, msg := clientError(t, err)
		if status != http.StatusNotFound || code != errcode.ErrorCodeManifestUnknown.String() || !strings.Contains(msg, remoteName) {
			t.Errorf("Manifest(%s): client told %d %s %q; want 404 MANIFEST_UNKNOWN naming %s", ref, status, code, msg, remoteName)
		}
	}
	if got := e.tag(name, "nope"); got != "" {
		t.Errorf("unknown tag set to %s", got)
	}
	if got := e.manifest(name, missing); got != nil {
		t.Errorf("unknown digest stored")
	}
}

// TestEventsAfterBlobs: each cached image records the event a push
// records (a tag event for a pull by tag), and only once all its blobs
// are stored (the recorder checks each event as it is appended).
func TestEventsAfterBlobs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	const name = prefix + "/team/layers"
	img := randomImage(t, 64<<10, 4)
	d := e.up.push("team/layers", "v1", img)
	e.pull(name, "v1")
	ev := e.waitComplete(name, d)
	if ev.Kind != outbox.KindTag || ev.Tag != "v1" || ev.Repository != name {
		t.Errorf("event %+v, want a tag event for %s:v1", ev, name)
	}
	layers, _ := img.Layers()
	for _, l := range layers {
		ld, _ := l.Digest()
		if !e.hasBlob(name, digest.Digest(ld.String())) {
			t.Errorf("layer %s not stored", ld)
		}
	}
	cfg, _ := img.ConfigName()
	if !e.hasBlob(name, digest.Digest(cfg.String())) {
		t.Errorf("config %s not stored", cfg)
	}
	if n := len(e.events.all()); n != 1 {
		t.Errorf("%d events for one image, want 1: %+v", n, e.events.all())
	}
}

// TestMissingTagRemembered: a tag the remote does not have is answered 404
// without asking the remote again for min(tagTTL, 1m); then it is asked
// again, and a tag pushed since is found.
func TestMissingTagRemembered(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil) // tagTTL 5m: remembered for a minute
	const name = prefix + "/library/late"
	for range 3 {
		if _, err := e.set.Manifest(context.Background(), name, "v1"); err == nil {
			t.Fatal("Manifest of a tag the remote lacks: no error")
		}
	}
	if got := e.up.count("", "/v2/library/late/manifests/v1"); got != 1 {
		t.Errorf("remote asked %d times for a tag it lacks, within a minute; want 1", got)
	}
	d := e.up.push("library/late", "v1", randomImage(t, 256, 1))
	e.clock.Advance(61 * time.Second)
	res, err := e.set.Manifest(context.Background(), name, "v1")
	if err != nil || res != cache.Miss {
		t.Fatalf("Manifest after a minute: %q, %v; want a miss", res, err)
	}
	if got := e.tag(name, "v1"); got != d {
		t.Errorf("tag v1 → %s, want %s", got, d)
	}
}
