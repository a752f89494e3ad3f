package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Bounds of the blob ownership index of a quarantine repository.
const (
	// ownersRefresh is the least time between two rebuilds of a
	// repository's index for a blob it does not know (a manifest pushed on
	// another replica); ownersMaxAge is when it is rebuilt regardless.
	ownersRefresh = 5 * time.Second
	ownersMaxAge  = 5 * time.Minute
	// maxOwnerChecks bounds the manifests checked for one blob read: a blob
	// shared by more quarantined images than this may be withheld although
	// a released one also uses it.
	maxOwnerChecks = 64
	// maxOwnedBlobs bounds the blobs indexed per repository; a blob beyond
	// it is withheld from readers of quarantined repositories.
	maxOwnedBlobs = 500_000
)

// BlobRead describes a blob GET.
type BlobRead struct {
	Repository string
	Digest     digest.Digest
	// Login and CanPush are as in Pull.
	Login   string
	CanPush bool
	// Fetchable says that a blob the repository does not hold is not left
	// to the registry core's 404 but fetched on demand (a pull-through
	// cache namespace): it is then judged as if it were held.
	Fetchable bool
}

// allowBlob decides a blob read in a gated repository (quarantine, or
// trust enforce): the manifest revision served as a blob, a config or a
// layer is readable only when a released manifest of the repository is, or
// uses, that blob (or the reader may read withheld content: its pusher, or
// one who may push). What a signature tag holds is released with the digest
// the tag names. A blob the repository does not hold is left to the
// registry core (404) unless it is Fetchable; one that no manifest uses is
// withheld. The refusal
// does not name manifests.
func (g *Gate) allowBlob(ctx context.Context, b BlobRead) error {
	if !g.gated(b.Repository) || b.CanPush || g.owners.src == nil {
		return nil
	}
	if !b.Fetchable {
		held, err := g.owners.src.BlobExists(ctx, b.Repository, b.Digest)
		if err != nil {
			g.log.ErrorContext(ctx, "stat blob for a pull check", "repo", b.Repository, "digest", b.Digest, "err", err)
			return errcode.ErrorCodeUnavailable.WithMessage("could not check the blob against the repository's policy; retry later")
		}
		if !held {
			return nil
		}
	}
	for attempt := 0; attempt < 2; attempt++ {
		owners, fresh, err := g.owners.of(ctx, b.Repository, b.Digest, attempt > 0)
		if err != nil {
			g.log.ErrorContext(ctx, "index the repository's manifests", "repo", b.Repository, "err", err)
			return errcode.ErrorCodeUnavailable.WithMessage("could not check the blob against the repository's policy; retry later")
		}
		if g.anyReleased(ctx, b, owners) {
			return nil
		}
		if fresh {
			break
		}
	}
	return errcode.ErrorCodeDenied.WithMessage(fmt.Sprintf(
		"withheld: the blob belongs to no released content in %s (content awaiting a signature or a vulnerability scan, or no longer trusted, is withheld)", b.Repository))
}

// anyReleased reports whether one of a blob's owners is released to the
// reader: those released recently first, then tagged ones, then the rest,
// at most maxOwnerChecks not decided recently.
func (g *Gate) anyReleased(ctx context.Context, b BlobRead, owners []owner) bool {
	checks := 0
	for _, o := range owners {
		if b.Login != "" && g.pushers.Pusher(b.Repository, o.digest) == b.Login {
			return true
		}
		if g.owners.released(b.Repository, o.digest) {
			return true
		}
		if checks == maxOwnerChecks {
			continue
		}
		checks++
		if g.withheld(ctx, Pull{Repository: b.Repository, Digest: o.digest, Tag: o.tag}, 1) == nil {
			g.owners.release(b.Repository, o.digest)
			return true
		}
	}
	return false
}

// manifestSource reads a repository's manifests, tags and blobs.
type manifestSource interface {
	// WalkManifests calls fn with every manifest stored in repo.
	WalkManifests(ctx context.Context, repo string, fn func(d digest.Digest, payload []byte) error) error
	// Manifest returns a manifest's media type and bytes, or an error
	// wrapping trust.ErrNotFound.
	Manifest(ctx context.Context, repo string, d digest.Digest) (string, []byte, error)
	// Tags returns repo's tags and the digests they point to.
	Tags(ctx context.Context, repo string) (map[string]digest.Digest, error)
	// BlobExists reports whether repo holds blob d.
	BlobExists(ctx context.Context, repo string, d digest.Digest) (bool, error)
}

// owner is a manifest that is or uses a blob, and a tag that points to it
// ("-" for none): for what a signature tag holds, that tag, so that the
// check releases it with the digest the tag names.
type owner struct {
	digest digest.Digest
	tag    string
}

// ownerIndex maps the blobs of gated repositories to the manifests that
// are, or use, them. It is rebuilt from storage, at most every
// ownersRefresh, when asked about a blob it does not know or that no
// released manifest uses, and forgotten when this process stores a
// manifest in the repository. It also remembers, for ownersRefresh, which
// manifests were found released.
type ownerIndex struct {
	src   manifestSource
	now   func() time.Time
	mu    sync.Mutex
	repos map[string]*repoOwners
}

type repoOwners struct {
	mu     sync.Mutex // held while building
	built  time.Time
	owners map[digest.Digest][]owner
	// released holds the manifests found released, until when.
	released map[digest.Digest]time.Time
}

// maxIndexedRepos bounds the repositories whose index is kept; beyond it
// the index is dropped and rebuilt on demand.
const maxIndexedRepos = 1024

func newOwnerIndex(src manifestSource) *ownerIndex {
	x := &ownerIndex{now: time.Now, repos: map[string]*repoOwners{}}
	if src != nil {
		x.src = src
	}
	return x
}

// forget drops repo's index; the next read rebuilds it.
func (x *ownerIndex) forget(repo string) {
	x.mu.Lock()
	delete(x.repos, repo)
	x.mu.Unlock()
}

func (x *ownerIndex) repo(repo string) *repoOwners {
	x.mu.Lock()
	defer x.mu.Unlock()
	ro, ok := x.repos[repo]
	if !ok {
		if len(x.repos) >= maxIndexedRepos {
			x.repos = map[string]*repoOwners{}
		}
		ro = &repoOwners{released: map[digest.Digest]time.Time{}}
		x.repos[repo] = ro
	}
	return ro
}

// released reports whether d was found released within ownersRefresh.
func (x *ownerIndex) released(repo string, d digest.Digest) bool {
	ro := x.repo(repo)
	ro.mu.Lock()
	defer ro.mu.Unlock()
	until, ok := ro.released[d]
	return ok && x.now().Before(until)
}

// release remembers that d was found released.
func (x *ownerIndex) release(repo string, d digest.Digest) {
	ro := x.repo(repo)
	ro.mu.Lock()
	defer ro.mu.Unlock()
	if len(ro.released) >= maxOwnerChecks*16 {
		ro.released = map[digest.Digest]time.Time{}
	}
	ro.released[d] = x.now().Add(ownersRefresh)
}

// of returns the owners of blob d in repo, tagged ones first; fresh
// reports that the index was built by this call or within ownersRefresh
// (a rebuild would find nothing newer). rebuild asks for a rebuild when
// the index is older than ownersRefresh.
func (x *ownerIndex) of(ctx context.Context, repo string, d digest.Digest, rebuild bool) ([]owner, bool, error) {
	ro := x.repo(repo)
	ro.mu.Lock()
	defer ro.mu.Unlock()
	age := x.now().Sub(ro.built)
	known := ro.owners != nil && age < ownersMaxAge
	if owners, ok := ro.owners[d]; known && ok && !(rebuild && age >= ownersRefresh) {
		return owners, age < ownersRefresh, nil
	}
	if known && age < ownersRefresh {
		return ro.owners[d], true, nil
	}
	owners, err := x.build(ctx, repo)
	if err != nil {
		return nil, false, err
	}
	ro.owners, ro.built = owners, x.now()
	return owners[d], true, nil
}

// build reads repo's manifests and signature tags into an index.
func (x *ownerIndex) build(ctx context.Context, repo string) (map[digest.Digest][]owner, error) {
	tags, err := x.src.Tags(ctx, repo)
	if err != nil {
		return nil, err
	}
	// A manifest's tag for the check: a signature tag when one holds it
	// (so that it is released with the digest the tag names), else the
	// first other tag in name order.
	names := make([]string, 0, len(tags))
	for name := range tags {
		names = append(names, name)
	}
	sort.Strings(names)
	tagOf := map[digest.Digest]string{}
	for _, name := range names {
		if _, sig := signatureTagSubject(name); sig {
			tagOf[tags[name]] = name
		}
	}
	for _, name := range names {
		if _, ok := tagOf[tags[name]]; !ok {
			tagOf[tags[name]] = name
		}
	}
	byBlob := map[digest.Digest][]owner{}
	err = x.src.WalkManifests(ctx, repo, func(m digest.Digest, payload []byte) error {
		o := owner{digest: m, tag: "-"}
		if t, ok := tagOf[m]; ok {
			o.tag = t
		}
		add := func(b digest.Digest) {
			if len(byBlob) < maxOwnedBlobs || byBlob[b] != nil {
				byBlob[b] = append(byBlob[b], o)
			}
		}
		add(m)
		var body struct {
			Config *v1.Descriptor  `json:"config"`
			Layers []v1.Descriptor `json:"layers"`
		}
		if json.Unmarshal(payload, &body) != nil {
			return nil
		}
		if body.Config != nil {
			add(body.Config.Digest)
		}
		for _, l := range body.Layers {
			add(l.Digest)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for b, os := range byBlob {
		sort.SliceStable(os, func(i, j int) bool { return os[i].tag != "-" && os[j].tag == "-" })
		byBlob[b] = os
	}
	return byBlob, nil
}

// WalkManifests calls fn with each manifest stored in repo and its bytes.
func (c *Content) WalkManifests(ctx context.Context, repo string, fn func(d digest.Digest, payload []byte) error) error {
	r, err := c.repo(ctx, repo)
	if err != nil {
		return err
	}
	ms, err := r.Manifests(ctx)
	if err != nil {
		return err
	}
	en, ok := ms.(distribution.ManifestEnumerator)
	if !ok {
		return errors.New("the manifest service cannot list manifests")
	}
	err = en.Enumerate(ctx, func(d digest.Digest) error {
		m, err := ms.Get(ctx, d)
		if err != nil {
			return nil // removed meanwhile, or unreadable: uses nothing
		}
		_, payload, err := m.Payload()
		if err != nil {
			return nil
		}
		return fn(d, payload)
	})
	if notFound(err) {
		return nil
	}
	return err
}

// Tags returns repo's tags and the digests they point to; none for a
// repository that does not exist.
func (c *Content) Tags(ctx context.Context, repo string) (map[string]digest.Digest, error) {
	r, err := c.repo(ctx, repo)
	if err != nil {
		return nil, err
	}
	ts := r.Tags(ctx)
	names, err := ts.All(ctx)
	if notFound(err) {
		return map[string]digest.Digest{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := make(map[string]digest.Digest, len(names))
	for _, name := range names {
		desc, err := ts.Get(ctx, name)
		if notFound(err) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out[name] = desc.Digest
	}
	return out, nil
}

// BlobExists reports whether repo holds blob d: a layer or config it
// links, or one of its manifests (served as a blob too).
func (c *Content) BlobExists(ctx context.Context, repo string, d digest.Digest) (bool, error) {
	r, err := c.repo(ctx, repo)
	if err != nil {
		return false, err
	}
	_, err = r.Blobs(ctx).Stat(ctx, d)
	if err == nil || !notFound(err) {
		return err == nil, err
	}
	ms, err := r.Manifests(ctx)
	if err != nil {
		return false, err
	}
	ok, err := ms.Exists(ctx, d)
	if notFound(err) {
		return false, nil
	}
	return ok, err
}
