package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
}

// AllowBlob decides a blob read in a quarantine repository: the manifest
// revision served as a blob, a config or a layer is readable only when a
// released manifest of the repository is, or uses, that blob (or the reader
// may read quarantined content: its pusher, or one who may push). A blob no
// manifest uses is withheld too. The refusal does not name manifests.
func (g *Gate) AllowBlob(ctx context.Context, b BlobRead) error {
	if !g.gated(b.Repository) || b.CanPush || g.owners.walker == nil {
		return nil
	}
	owners, err := g.owners.of(ctx, b.Repository, b.Digest)
	if err != nil {
		g.log.ErrorContext(ctx, "index the repository's manifests", "repo", b.Repository, "err", err)
		return errcode.ErrorCodeUnavailable.WithMessage("could not check the blob against the repository's quarantine; retry later")
	}
	for i, o := range owners {
		if i == maxOwnerChecks {
			break
		}
		if b.Login != "" && g.pushers.Pusher(b.Repository, o) == b.Login {
			return nil
		}
		if g.withheld(ctx, Pull{Repository: b.Repository, Digest: o, Tag: "-"}, 0) == nil {
			return nil
		}
	}
	return errcode.ErrorCodeDenied.WithMessage(fmt.Sprintf(
		"quarantined: the blob belongs to no released content in %s (content awaiting a signature or a vulnerability scan is withheld)", b.Repository))
}

// manifestWalker calls fn with every manifest stored in a repository.
type manifestWalker interface {
	WalkManifests(ctx context.Context, repo string, fn func(d digest.Digest, payload []byte) error) error
}

// manifestSource reads a repository's manifests, one or all.
type manifestSource interface {
	manifestWalker
	// Manifest returns a manifest's media type and bytes, or an error
	// wrapping trust.ErrNotFound.
	Manifest(ctx context.Context, repo string, d digest.Digest) (string, []byte, error)
}

// ownerIndex maps the blobs of quarantine repositories to the manifests
// that are, or use, them. It is rebuilt from storage, at most every
// ownersRefresh, when asked about a blob it does not know, and forgotten
// when this process stores a manifest in the repository.
type ownerIndex struct {
	walker manifestWalker
	now    func() time.Time
	mu     sync.Mutex
	repos  map[string]*repoOwners
}

type repoOwners struct {
	mu     sync.Mutex // held while building
	built  time.Time
	owners map[digest.Digest][]digest.Digest
}

func newOwnerIndex(w manifestSource) *ownerIndex {
	x := &ownerIndex{now: time.Now, repos: map[string]*repoOwners{}}
	if w != nil {
		x.walker = w
	}
	return x
}

// forget drops repo's index; the next read rebuilds it.
func (x *ownerIndex) forget(repo string) {
	if x == nil {
		return
	}
	x.mu.Lock()
	delete(x.repos, repo)
	x.mu.Unlock()
}

// of returns the manifests of repo that are or use blob d.
func (x *ownerIndex) of(ctx context.Context, repo string, d digest.Digest) ([]digest.Digest, error) {
	x.mu.Lock()
	ro, ok := x.repos[repo]
	if !ok {
		ro = &repoOwners{}
		x.repos[repo] = ro
	}
	x.mu.Unlock()

	ro.mu.Lock()
	defer ro.mu.Unlock()
	age := x.now().Sub(ro.built)
	if owners, ok := ro.owners[d]; ok && ro.owners != nil && age < ownersMaxAge {
		return owners, nil
	}
	if ro.owners != nil && age < ownersRefresh {
		return nil, nil
	}
	owners := map[digest.Digest][]digest.Digest{}
	err := x.walker.WalkManifests(ctx, repo, func(m digest.Digest, payload []byte) error {
		add := func(b digest.Digest) {
			if len(owners) < maxOwnedBlobs || owners[b] != nil {
				owners[b] = append(owners[b], m)
			}
		}
		add(m)
		var body struct {
			Config    *v1.Descriptor  `json:"config"`
			Layers    []v1.Descriptor `json:"layers"`
			Manifests []v1.Descriptor `json:"manifests"`
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
	ro.owners, ro.built = owners, x.now()
	return owners[d], nil
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
