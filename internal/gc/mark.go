package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
)

// refs is what a manifest refers to.
type refs struct {
	children []digest.Digest // index entries: manifests of the same repository
	blobs    []digest.Digest // config, layers, artifact blobs
	subject  digest.Digest
	unread   bool // the manifest's content could not be read or parsed
}

// contents reads and parses manifests, each digest once per run.
type contents struct {
	driver storagedriver.StorageDriver
	mu     sync.Mutex
	parsed map[digest.Digest]refs
}

func (c *contents) get(ctx context.Context, d digest.Digest) (refs, error) {
	c.mu.Lock()
	r, ok := c.parsed[d]
	c.mu.Unlock()
	if ok {
		return r, nil
	}
	b, err := c.driver.GetContent(ctx, blobData(d))
	var nf storagedriver.PathNotFoundError
	switch {
	case errors.As(err, &nf):
		r = refs{unread: true}
	case err != nil:
		return refs{}, fmt.Errorf("read manifest %s: %w", d, err)
	default:
		r = parseRefs(b)
	}
	c.mu.Lock()
	c.parsed[d] = r
	c.mu.Unlock()
	return r, nil
}

// Refs returns what the manifest body refers to: index children, config,
// layers and blobs, and its subject.
func parseRefs(b []byte) refs {
	var m struct {
		Config    *struct{ Digest digest.Digest }  `json:"config"`
		Layers    []struct{ Digest digest.Digest } `json:"layers"`
		Blobs     []struct{ Digest digest.Digest } `json:"blobs"`
		Manifests []struct{ Digest digest.Digest } `json:"manifests"`
		FSLayers  []struct {
			BlobSum digest.Digest `json:"blobSum"`
		} `json:"fsLayers"`
		Subject *struct{ Digest digest.Digest } `json:"subject"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return refs{unread: true}
	}
	var r refs
	add := func(d digest.Digest) {
		if d.Validate() == nil {
			r.blobs = append(r.blobs, d)
		}
	}
	if m.Config != nil {
		add(m.Config.Digest)
	}
	for _, l := range m.Layers {
		add(l.Digest)
	}
	for _, l := range m.Blobs {
		add(l.Digest)
	}
	for _, l := range m.FSLayers {
		add(l.BlobSum)
	}
	for _, c := range m.Manifests {
		if c.Digest.Validate() == nil {
			r.children = append(r.children, c.Digest)
		}
	}
	if m.Subject != nil && m.Subject.Digest.Validate() == nil {
		r.subject = m.Subject.Digest
	}
	return r
}

// References returns the manifests and blobs a manifest body refers to, as
// a push of it vouches for them.
func References(body []byte) (manifests, blobs []digest.Digest) {
	r := parseRefs(body)
	return r.children, r.blobs
}

// marking is the live set as it grows.
type marking struct {
	inv      *inventory
	contents *contents
	live     map[string]map[digest.Digest]bool // repo → live manifests
	blobs    map[digest.Digest]bool            // live blobs (manifests included)
}

func newMarking(inv *inventory, c *contents) *marking {
	m := &marking{inv: inv, contents: c, live: map[string]map[digest.Digest]bool{}, blobs: map[digest.Digest]bool{}}
	for name := range inv.repos {
		m.live[name] = map[digest.Digest]bool{}
	}
	return m
}

func (m *marking) isLive(repo string, d digest.Digest) bool { return m.live[repo][d] }

// manifest marks manifest d of repo live, with everything it reaches:
// children, blobs, referrers, recursively.
func (m *marking) manifest(ctx context.Context, r *repoState, d digest.Digest) error {
	stack := []digest.Digest{d}
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if m.live[r.name][d] {
			continue
		}
		m.live[r.name][d] = true
		m.blobs[d] = true
		stored := d
		if t, ok := r.aliases[d]; ok {
			stored = t
			stack = append(stack, t)
			continue
		}
		refs, err := m.contents.get(ctx, stored)
		if err != nil {
			return err
		}
		stack = append(stack, refs.children...)
		for _, b := range refs.blobs {
			m.blob(r, b)
		}
		stack = append(stack, r.referrers[d]...)
	}
	return nil
}

func (m *marking) blob(r *repoState, d digest.Digest) {
	m.blobs[d] = true
	if t, ok := r.aliases[d]; ok {
		m.blobs[t] = true
	}
}

// closure marks live, until nothing changes, the manifests that are not
// live yet but must be: referrers whose subject is live (found by their
// content, should the referrers index miss them) and cosign's tags for a
// live subject or for a subject this repository does not hold.
func (m *marking) closure(ctx context.Context, r *repoState, old func(time.Time) bool, cosign map[string]digest.Digest) error {
	for {
		changed := false
		for d, mod := range r.revisions {
			if m.isLive(r.name, d) || !old(mod) {
				continue
			}
			refs, err := m.contents.get(ctx, m.stored(r, d))
			if err != nil {
				return err
			}
			if refs.subject != "" && m.isLive(r.name, refs.subject) {
				if err := m.manifest(ctx, r, d); err != nil {
					return err
				}
				changed = true
			}
		}
		for name, subject := range cosign {
			t := r.tags[name]
			if t == nil || m.isLive(r.name, t.digest) {
				continue
			}
			if _, held := r.revisions[subject]; held && !m.isLive(r.name, subject) {
				continue
			}
			if err := m.manifest(ctx, r, t.digest); err != nil {
				return err
			}
			changed = true
		}
		if !changed {
			return nil
		}
	}
}

func (m *marking) stored(r *repoState, d digest.Digest) digest.Digest {
	if t, ok := r.aliases[d]; ok {
		return t
	}
	return d
}

// prefetch reads the manifests of the given revisions concurrently, so
// that marking, which is sequential, finds them parsed.
func (m *marking) prefetch(ctx context.Context, workers int) error {
	var ds []digest.Digest
	seen := map[digest.Digest]bool{}
	for _, r := range m.inv.repos {
		for d := range r.revisions {
			s := m.stored(r, d)
			if !seen[s] {
				seen[s] = true
				ds = append(ds, s)
			}
		}
	}
	slices.Sort(ds)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for _, d := range ds {
		g.Go(func() error {
			_, err := m.contents.get(gctx, d)
			return err
		})
	}
	return g.Wait()
}
