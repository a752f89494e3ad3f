package admission

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/trust"
)

// memRepo is a manifestSource over maps: manifests walked in order, tags,
// and every blob a manifest names held.
type memRepo struct {
	manifests map[digest.Digest][]byte
	order     []digest.Digest
	tags      map[string]digest.Digest
	blobs     map[digest.Digest]bool
}

func newMemRepo() *memRepo {
	return &memRepo{manifests: map[digest.Digest][]byte{}, tags: map[string]digest.Digest{}, blobs: map[digest.Digest]bool{}}
}

// put stores a manifest and marks the blobs it names (given) as held.
func (m *memRepo) put(body []byte, blobs ...digest.Digest) digest.Digest {
	d := digest.FromBytes(body)
	m.manifests[d] = body
	m.order = append(m.order, d)
	m.blobs[d] = true
	for _, b := range blobs {
		m.blobs[b] = true
	}
	return d
}

func (m *memRepo) Manifest(_ context.Context, _ string, d digest.Digest) (string, []byte, error) {
	b, ok := m.manifests[d]
	if !ok {
		return "", nil, fmt.Errorf("manifest %s: %w", d, trust.ErrNotFound)
	}
	return "application/vnd.oci.image.manifest.v1+json", b, nil
}

func (m *memRepo) WalkManifests(_ context.Context, _ string, fn func(digest.Digest, []byte) error) error {
	for _, d := range m.order {
		if err := fn(d, m.manifests[d]); err != nil {
			return err
		}
	}
	return nil
}

func (m *memRepo) Tags(context.Context, string) (map[string]digest.Digest, error) { return m.tags, nil }

func (m *memRepo) BlobExists(_ context.Context, _ string, d digest.Digest) (bool, error) {
	return m.blobs[d], nil
}

// trustOnly trusts the listed digests, in an enforce policy.
type trustOnly map[digest.Digest]bool

func (trustOnly) Policy(string) (string, string, policy.Mode, bool) {
	return "prod", "v1", policy.ModeEnforce, true
}

func (f trustOnly) VerifyWithParents(_ context.Context, repo string, d digest.Digest, _ []digest.Digest) (trust.Verdict, error) {
	return trust.Verdict{Repository: repo, Digest: d, Policy: "prod", Mode: policy.ModeEnforce, Trusted: f[d], Reason: "no signature"}, nil
}

// gateOver is a gate whose verifier trusts the given digests, reading repo.
func gateOver(t testing.TB, repo *memRepo, trusted ...digest.Digest) *Gate {
	t.Helper()
	g := newGate(t, nil)
	tr := trustOnly{}
	for _, d := range trusted {
		tr[d] = true
	}
	g.verifier, g.parents, g.content, g.owners = tr, noParents{}, repo, newOwnerIndex(repo)
	return g
}

func image(config, layer digest.Digest, extra string) []byte {
	return fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":1},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":%q,"size":1}]%s}`, config, layer, extra)
}

// TestMadeUpSubjectReleasesNothing: an unsigned runnable image whose
// subject names a digest that does not exist is withheld, and its layer.
func TestMadeUpSubjectReleasesNothing(t *testing.T) {
	t.Parallel()
	repo := newMemRepo()
	layer := digest.FromString("layer")
	img := image(digest.FromString("cfg"), layer, fmt.Sprintf(`,"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":1}`, digest.FromString("nothing")))
	d := repo.put(img, layer)
	g := gateOver(t, repo)
	if err := g.AllowPull(context.Background(), Pull{Repository: "team/app", Digest: d}); err == nil {
		t.Error("an unsigned image with a made-up subject is served")
	}
	if err := g.AllowBlob(context.Background(), BlobRead{Repository: "team/app", Digest: layer}); err == nil {
		t.Error("its layer is served")
	}
}

// TestSubjectOfReleasedImage: an unsigned image naming a released image as
// its subject is not released with it, also when its body leaves the
// mediaType out (the stored media type counts); an artifact is.
func TestSubjectOfReleasedImage(t *testing.T) {
	t.Parallel()
	repo := newMemRepo()
	released := repo.put(image(digest.FromString("cfg"), digest.FromString("layer"), ""))
	g := gateOver(t, repo, released)
	bare := repo.put(fmt.Appendf(nil, `{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":1},`+
		`"layers":[],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":1}}`, digest.FromString("cfg2"), released))
	if err := g.AllowPull(context.Background(), Pull{Repository: "team/app", Digest: bare}); err == nil {
		t.Error("an unsigned image without a mediaType field, with a released subject, is served")
	}
	sbom := repo.put(fmt.Appendf(nil, `{"schemaVersion":2,"artifactType":"application/spdx+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":%q,"size":2},`+
		`"layers":[],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":1}}`, digest.FromString("{}"), released))
	if err := g.AllowPull(context.Background(), Pull{Repository: "team/app", Digest: sbom}); err != nil {
		t.Errorf("the SBOM of a released image: %v", err)
	}
}

// TestLegacySignatureReadable: cosign verify by a reader of a signed image
// reads the signature manifest under sha256-<hex>.sig and its layer; a
// signature tag of a withheld image is withheld with it.
func TestLegacySignatureReadable(t *testing.T) {
	t.Parallel()
	repo := newMemRepo()
	signed := repo.put(image(digest.FromString("cfg1"), digest.FromString("l1"), ""))
	unsigned := repo.put(image(digest.FromString("cfg2"), digest.FromString("l2"), ""))
	sigLayer := func(s string) digest.Digest { return digest.FromString("payload of " + s) }
	sigManifest := func(of digest.Digest) digest.Digest {
		return repo.put(fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
			`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":3},`+
			`"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":%q,"size":5}]}`,
			digest.FromString("sigcfg "+of.String()), sigLayer(of.String())), sigLayer(of.String()))
	}
	for _, d := range []digest.Digest{signed, unsigned} {
		repo.tags["sha256-"+d.Encoded()+".sig"] = sigManifest(d)
	}
	g := gateOver(t, repo, signed)
	ctx := context.Background()
	sigTag := "sha256-" + signed.Encoded() + ".sig"
	if err := g.AllowPull(ctx, Pull{Repository: "team/app", Digest: repo.tags[sigTag], Tag: sigTag}); err != nil {
		t.Errorf("the signature of a signed image, by tag: %v", err)
	}
	if err := g.AllowBlob(ctx, BlobRead{Repository: "team/app", Digest: sigLayer(signed.String())}); err != nil {
		t.Errorf("the signature's layer: %v", err)
	}
	otherTag := "sha256-" + unsigned.Encoded() + ".sig"
	if err := g.AllowPull(ctx, Pull{Repository: "team/app", Digest: repo.tags[otherTag], Tag: otherTag}); err == nil {
		t.Error("the signature tag of a withheld image is served")
	}
	if err := g.AllowBlob(ctx, BlobRead{Repository: "team/app", Digest: sigLayer(unsigned.String())}); err == nil {
		t.Error("the signature layer of a withheld image is served")
	}
}

// TestSharedBaseLayer: a released, tagged image's base layer is served
// although more unreleased builds than one check examines share it.
func TestSharedBaseLayer(t *testing.T) {
	t.Parallel()
	repo := newMemRepo()
	base := digest.FromString("base layer")
	var release digest.Digest
	for i := range 3 * maxOwnerChecks {
		release = repo.put(image(digest.FromString(fmt.Sprint("cfg", i)), base, ""), base)
	}
	repo.tags["v1"] = release
	g := gateOver(t, repo, release)
	if err := g.AllowBlob(context.Background(), BlobRead{Repository: "team/app", Digest: base}); err != nil {
		t.Errorf("the release's base layer: %v", err)
	}
}

// TestOwnersAfterPush: once a push is recorded, the next blob read sees
// the new manifest; a blob the repository does not hold is left to the
// core.
func TestOwnersAfterPush(t *testing.T) {
	t.Parallel()
	repo := newMemRepo()
	base := digest.FromString("base layer")
	v1 := repo.put(image(digest.FromString("cfg1"), base, ""), base)
	v2body := image(digest.FromString("cfg2"), base, "")
	g := gateOver(t, repo, digest.FromBytes(v2body))
	ctx := context.Background()
	if err := g.AllowBlob(ctx, BlobRead{Repository: "team/app", Digest: base}); err == nil {
		t.Fatalf("the layer of unsigned %s is served", v1)
	}
	v2 := repo.put(v2body, base)
	g.RecordPush("team/app", v2, "ci")
	if err := g.AllowBlob(ctx, BlobRead{Repository: "team/app", Digest: base}); err != nil {
		t.Errorf("the layer of signed v2 after its push: %v", err)
	}
	if err := g.AllowBlob(ctx, BlobRead{Repository: "team/app", Digest: digest.FromString("not held")}); err != nil {
		t.Errorf("a blob the repository does not hold: %v, want it left to the core", err)
	}
}

// TestOwnersFromAnotherReplica: a manifest pushed elsewhere (no push
// recorded here) is seen once the index is older than ownersRefresh.
func TestOwnersFromAnotherReplica(t *testing.T) {
	t.Parallel()
	repo := newMemRepo()
	base := digest.FromString("base layer")
	repo.put(image(digest.FromString("cfg1"), base, ""), base)
	v2body := image(digest.FromString("cfg2"), base, "")
	g := gateOver(t, repo, digest.FromBytes(v2body))
	now := time.Now()
	g.owners.now = func() time.Time { return now }
	ctx := context.Background()
	if err := g.AllowBlob(ctx, BlobRead{Repository: "team/app", Digest: base}); err == nil {
		t.Fatal("the layer of an unsigned image is served")
	}
	repo.put(v2body, base)
	now = now.Add(ownersRefresh)
	if err := g.AllowBlob(ctx, BlobRead{Repository: "team/app", Digest: base}); err != nil {
		t.Errorf("the layer of v2 signed on another replica: %v", err)
	}
}

// TestOwnersConcurrent: blob checks, pushes forgetting the index and
// rebuilds run at once (run with -race).
func TestOwnersConcurrent(t *testing.T) {
	t.Parallel()
	repo := newMemRepo()
	base := digest.FromString("base layer")
	release := repo.put(image(digest.FromString("cfg"), base, ""), base)
	repo.tags["v1"] = release
	g := gateOver(t, repo, release)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if i%4 == 0 {
					g.RecordPush("team/app", release, "ci")
					continue
				}
				if err := g.AllowBlob(ctx, BlobRead{Repository: "team/app", Digest: base}); err != nil {
					t.Errorf("released base layer: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestFetchableBlob: a blob a cache namespace would fetch on demand is
// judged by the manifests that use it although the repository does not
// hold it yet: withheld unless a released manifest uses it.
func TestFetchableBlob(t *testing.T) {
	t.Parallel()
	repo := newMemRepo()
	signedLayer, unsignedLayer := digest.FromString("signed layer"), digest.FromString("unsigned layer")
	signedBody := image(digest.FromString("cfg1"), signedLayer, "")
	repo.put(signedBody)
	repo.put(image(digest.FromString("cfg2"), unsignedLayer, ""))
	g := gateOver(t, repo, digest.FromBytes(signedBody))
	ctx := context.Background()
	for _, c := range []struct {
		name     string
		d        digest.Digest
		withheld bool
	}{
		{"layer of a signed image", signedLayer, false},
		{"layer of an unsigned image", unsignedLayer, true},
		{"layer of no image", digest.FromString("anything"), true},
	} {
		err := g.AllowBlob(ctx, BlobRead{Repository: "hub/library/app", Digest: c.d, Fetchable: true})
		if (err != nil) != c.withheld {
			t.Errorf("%s: %v, want withheld %v", c.name, err, c.withheld)
		}
	}
	if err := g.AllowBlob(ctx, BlobRead{Repository: "hub/library/app", Digest: unsignedLayer}); err != nil {
		t.Errorf("a blob not held and not fetchable: %v, want it left to the registry core", err)
	}
}
