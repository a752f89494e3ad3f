package gc

import (
	"context"
	"fmt"
	"path"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/config"
)

func TestCollectKeepsTaggedAndFreesTheRest(t *testing.T) {
	backends(t, func(t *testing.T, s *store) {
		base := s.blob("app", "base layer")
		old := s.blob("app", "layer only the old image has")
		v1 := s.image("app", "v1", base, old)
		v2 := s.image("app", "v2", base, s.blob("app", "layer of v2"))
		s.tag("app", "v2", v2)
		orphan := s.blob("other", "uploaded, never used")
		rep := s.collect(s.collector(Options{DeleteUntagged: true}), false)

		if s.hasManifest("app", v1) || s.hasBlob(v1) {
			t.Error("the untagged manifest is still there")
		}
		if s.hasBlob(old) || s.exists(path.Join(layerDir("app", old), "link")) {
			t.Error("the layer only the untagged image used is still there, or its link")
		}
		if s.hasBlob(orphan) {
			t.Error("a blob no manifest uses is still there")
		}
		if !s.hasManifest("app", v2) || !s.hasBlob(v2) || !s.hasBlob(base) || !s.hasTag("app", "v2") {
			t.Error("the tagged image or its shared base layer was deleted")
		}
		if rep.Manifests.Deleted != 1 || rep.Blobs.Deleted != 4 || rep.BytesReclaimed == 0 {
			t.Errorf("report: manifests deleted %d (want 1), blobs deleted %d (want 4: manifest, config, layer, orphan), bytes %d",
				rep.Manifests.Deleted, rep.Blobs.Deleted, rep.BytesReclaimed)
		}
	})
}

func TestCollectFollowsIndexesAndReferrers(t *testing.T) {
	backends(t, func(t *testing.T, s *store) {
		amd := s.image("app", "amd64", s.blob("app", "amd64 layer"))
		arm := s.image("app", "arm64", s.blob("app", "arm64 layer"))
		ix := s.index("app", amd, arm)
		s.tag("app", "latest", ix)
		sig := s.referrer("app", "signature", ix)
		sbom := s.referrer("app", "sbom", ix)
		sbomSig := s.referrer("app", "sbom-signature", sbom)
		// cosign's tag for the index, and one for a subject in another
		// repository (COSIGN_REPOSITORY).
		cosignSig := s.image("app", "cosign sig", s.blob("app", "cosign payload"))
		s.tag("app", "sha256-"+ix.Encoded()+".sig", cosignSig)
		elsewhere := s.image("app", "cosign sig elsewhere", s.blob("app", "cosign payload 2"))
		s.tag("app", "sha256-"+digest.FromString("not here").Encoded()+".sig", elsewhere)

		s.collect(s.collector(Options{DeleteUntagged: true}), false)
		for name, d := range map[string]digest.Digest{"amd64 child": amd, "arm64 child": arm, "index": ix, "signature": sig,
			"sbom": sbom, "signature of the sbom": sbomSig, "cosign signature": cosignSig, "cosign signature of a subject elsewhere": elsewhere} {
			if !s.hasManifest("app", d) || !s.hasBlob(d) {
				t.Errorf("%s of a tagged index was deleted", name)
			}
		}

		// Untag the index: everything that hung on it goes, except the
		// signature whose subject lives elsewhere.
		if err := s.d.Delete(context.Background(), tagDir("app", "latest")); err != nil {
			t.Fatal(err)
		}
		rep := s.collect(s.collector(Options{DeleteUntagged: true}), false)
		for name, d := range map[string]digest.Digest{"amd64 child": amd, "index": ix, "signature": sig, "sbom": sbom,
			"signature of the sbom": sbomSig, "cosign signature": cosignSig} {
			if s.hasManifest("app", d) || s.hasBlob(d) {
				t.Errorf("%s of a deleted index is still there", name)
			}
		}
		if s.hasTag("app", "sha256-"+ix.Encoded()+".sig") {
			t.Error("cosign's tag for a deleted subject is still there")
		}
		if !s.hasManifest("app", elsewhere) {
			t.Error("a cosign signature of a subject in another repository was deleted")
		}
		if s.exists(referrerSubjectDir("app", ix)) || s.exists(referrerSubjectDir("app", sbom)) {
			t.Error("the referrers index still lists referrers of deleted subjects")
		}
		reasons := map[digest.Digest]string{}
		for _, d := range rep.Deleted {
			if d.Kind == "manifest" {
				reasons[d.Digest] = d.Reason
			}
		}
		if reasons[sig] != ReasonSubjectDeleted || reasons[ix] != ReasonUntagged {
			t.Errorf("reasons: signature %q, index %q", reasons[sig], reasons[ix])
		}
	})
}

func TestReferrerMissingFromTheIndexStillLives(t *testing.T) {
	s := newStore(t)
	img := s.image("app", "img", s.blob("app", "layer"))
	s.tag("app", "v1", img)
	sig := s.referrer("app", "sig", img)
	if err := s.d.Delete(context.Background(), referrerEntry("app", img, sig)); err != nil {
		t.Fatal(err)
	}
	s.collect(s.collector(Options{DeleteUntagged: true}), false)
	if !s.hasManifest("app", sig) {
		t.Error("a referrer of a live subject was deleted because the referrers index missed it")
	}
}

func TestGraceAndDeleteUntagged(t *testing.T) {
	s := newStore(t)
	young := s.image("app", "young", s.blob("app", "young layer"))
	c := s.collector(Options{DeleteUntagged: true, Grace: 2 * time.Hour}) // the clock is an hour ahead
	s.collect(c, false)
	if !s.hasManifest("app", young) || !s.hasBlob(young) {
		t.Fatal("an untagged manifest younger than the grace period was deleted")
	}
	s.collect(s.collector(Options{DeleteUntagged: false}), false)
	if !s.hasManifest("app", young) {
		t.Fatal("deleteUntagged: false deleted an untagged manifest")
	}
	s.collect(s.collector(Options{DeleteUntagged: true}), false)
	if s.hasManifest("app", young) {
		t.Fatal("an untagged manifest older than the grace period survived")
	}
}

func TestDryRunListsWhatTheRunDeletes(t *testing.T) {
	backends(t, func(t *testing.T, s *store) {
		for i := range 5 {
			d := s.image("app", fmt.Sprint(i), s.blob("app", fmt.Sprint("layer ", i)), s.blob("app", "shared"))
			if i%2 == 0 {
				s.tag("app", fmt.Sprint("t", i), d)
			}
		}
		s.referrer("app", "sig of untagged", s.image("app", "untagged", s.blob("app", "u")))
		before := s.count(blobsRoot)
		c := s.collector(Options{DeleteUntagged: true})
		dry := s.collect(c, true)
		if s.count(blobsRoot) != before {
			t.Fatal("the dry run deleted blobs")
		}
		real := s.collect(c, false)
		if len(dry.Deleted) == 0 || fmt.Sprint(deletedSet(dry)) != fmt.Sprint(deletedSet(real)) {
			t.Errorf("dry run listed\n%v\nthe run deleted\n%v", deletedSet(dry), deletedSet(real))
		}
		if dry.BytesReclaimed != real.BytesReclaimed {
			t.Errorf("bytes: dry run %d, run %d", dry.BytesReclaimed, real.BytesReclaimed)
		}
	})
}

func (s *store) count(root string) int {
	n := 0
	if err := walk(context.Background(), s.d, root, func(_ storagedriver.FileInfo) { n++ }); err != nil {
		s.t.Fatal(err)
	}
	return n
}

func TestRetention(t *testing.T) {
	s := newStore(t)
	start := time.Now()
	now := func() time.Time { return start.Add(48 * time.Hour) }
	var builds []digest.Digest
	for i := 1; i <= 30; i++ {
		d := s.image("ci/app", fmt.Sprint("build ", i), s.blob("ci/app", fmt.Sprint("layer ", i)))
		builds = append(builds, d)
		s.tag("ci/app", fmt.Sprintf("build-%d", i), d)
		time.Sleep(2 * time.Millisecond) // push order = modification order
	}
	s.tag("ci/app", "v1.0", builds[0])
	// build-2 was pulled recently.
	s.put(pullPath("ci/app", builds[1]), []byte("x"))
	// A repository no policy matches keeps every tag.
	other := s.image("other", "o", s.blob("other", "o"))
	s.tag("other", "build-1", other)
	ret := config.Retention{Policies: []config.RetentionPolicy{{
		Repositories: []string{"ci/**"},
		Keep: []config.KeepRule{
			{Tags: []string{"v*"}},
			{Tags: []string{"**"}, MostRecentlyPushed: 20},
			{Tags: []string{"build-*"}, PulledWithin: config.Duration(36 * time.Hour)},
		},
	}}}
	// On this clock everything was pushed two days ago, and build-2's
	// pull was recorded a day later.
	s.d = aged{StorageDriver: s.d, prefix: pullsRoot, shift: -24 * time.Hour}
	c := s.collector(Options{DeleteUntagged: true, Retention: ret, Now: now,
		Protected: func(repo, tag string) bool { return repo == "ci/app" && tag == "build-3" }})
	rep := s.collect(c, false)
	var kept []string
	for i := 1; i <= 30; i++ {
		if s.hasTag("ci/app", fmt.Sprintf("build-%d", i)) {
			kept = append(kept, fmt.Sprint(i))
		}
	}
	// The 20 most recently pushed are v1.0 (tagged last) and build-12..30;
	// build-2 was pulled lately and build-3 is immutable. build-1 goes
	// although v1.0 keeps its manifest: rules keep tags by name.
	want := "[2 3 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30]"
	if fmt.Sprint(kept) != want {
		t.Errorf("kept builds %v, want %v", kept, want)
	}
	if !s.hasTag("ci/app", "v1.0") || !s.hasManifest("ci/app", builds[0]) {
		t.Error("v1.0 or its manifest was deleted")
	}
	if s.hasManifest("ci/app", builds[3]) {
		t.Error("the manifest of a deleted tag (build-4) is still there")
	}
	if !s.hasTag("other", "build-1") {
		t.Error("retention touched a repository no policy matches")
	}
	if rep.Tags.Deleted != 9 {
		t.Errorf("tags deleted: %d, want 9 (build-1 and build-4..11)", rep.Tags.Deleted)
	}
}
