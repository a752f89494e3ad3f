package gc

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
)

// sweepBatch is how many candidates are tombstoned before the markers are
// read once for all of them.
const sweepBatch = 500

// sweep deletes what p planned, in order: tags, manifests, blobs, uploads.
// Manifests and blobs go through the tombstone protocol; what turns out
// marked is spared, with everything it reaches.
func (c *Collector) sweep(ctx context.Context, p *plan, rep *Report) error {
	var errs []error
	m := p.marking
	var mu sync.Mutex
	forEach := func(items []Deleted, f func(ctx context.Context, d Deleted) error) {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(c.workers)
		for _, d := range items {
			g.Go(func() error {
				if err := f(gctx, d); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
				return nil
			})
		}
		_ = g.Wait()
	}

	// Tags: each re-read first, so that one moved since the listing stays.
	var moved []Deleted
	forEach(p.tags, func(ctx context.Context, d Deleted) error {
		fi, err := c.driver.Stat(ctx, tagCurrent(d.Repository, d.Tag))
		var nf storagedriver.PathNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		if err != nil {
			return err
		}
		cur, err := c.readLink(ctx, tagCurrent(d.Repository, d.Tag))
		if err != nil {
			return err
		}
		if cur != d.Digest || !c.old(fi.ModTime()) {
			mu.Lock()
			moved = append(moved, Deleted{Kind: "tag", Repository: d.Repository, Tag: d.Tag, Digest: cur})
			mu.Unlock()
			return nil
		}
		if err := c.deleteTree(ctx, tagDir(d.Repository, d.Tag)); err != nil {
			return err
		}
		mu.Lock()
		rep.add(d)
		c.metrics.deleted.WithLabelValues("tag").Inc()
		mu.Unlock()
		return nil
	})
	for _, d := range moved {
		rep.Tags.Kept++
		if err := m.manifest(ctx, p.inv.repos[d.Repository], d.Digest); err != nil {
			return err
		}
	}
	rep.Tags.Kept += p.kept.Tags.Kept

	// Manifests.
	manifests := filter(p.manifests, func(d Deleted) bool { return !m.isLive(d.Repository, d.Digest) })
	rep.Manifests.Kept = p.kept.Manifests.Kept + len(p.manifests) - len(manifests)
	for batch := range slices.Chunk(manifests, sweepBatch) {
		spared, err := c.tombstoned(ctx, batch, func(d Deleted) string { return manifestTombstone(d.Repository, d.Digest) },
			func(ctx context.Context, d Deleted) error { return c.deleteManifest(ctx, p, d) }, forEach, rep)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		for _, d := range spared {
			rep.Manifests.Spared++
			rep.Manifests.Kept++
			if err := m.manifest(ctx, p.inv.repos[d.Repository], d.Digest); err != nil {
				return err
			}
		}
	}

	// Blobs: what a spared manifest reaches is live now.
	blobs := filter(p.blobs, func(d Deleted) bool { return !m.blobs[d.Digest] })
	p.links = linksTo(p.inv)
	rep.Blobs.Kept = p.kept.Blobs.Kept + len(p.blobs) - len(blobs)
	for batch := range slices.Chunk(blobs, sweepBatch) {
		spared, err := c.tombstoned(ctx, batch, func(d Deleted) string { return blobTombstone(d.Digest) },
			func(ctx context.Context, d Deleted) error { return c.deleteBlob(ctx, p, d) }, forEach, rep)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		rep.Blobs.Spared += len(spared)
		rep.Blobs.Kept += len(spared)
	}
	c.metrics.spared.Add(float64(rep.Blobs.Spared + rep.Manifests.Spared))

	// Upload sessions.
	forEach(p.uploads, func(ctx context.Context, d Deleted) error {
		if err := c.deleteTree(ctx, path.Join(repoDir(d.Repository), "_uploads", d.Upload)); err != nil {
			return err
		}
		mu.Lock()
		rep.add(d)
		c.metrics.deleted.WithLabelValues("upload").Inc()
		mu.Unlock()
		return nil
	})
	return errors.Join(errs...)
}

// tombstoned runs the protocol for one batch: tombstone each candidate,
// then read the markers, then delete the unmarked ones still within
// sweepWithin of their tombstone, then remove the tombstones. It returns
// the candidates it spared.
func (c *Collector) tombstoned(ctx context.Context, batch []Deleted, tomb func(Deleted) string,
	del func(context.Context, Deleted) error, forEach func([]Deleted, func(context.Context, Deleted) error), rep *Report) ([]Deleted, error) {
	written := c.now()
	var werr error
	var mu sync.Mutex
	forEach(batch, func(ctx context.Context, d Deleted) error {
		if err := c.driver.PutContent(ctx, tomb(d), []byte(c.holder)); err != nil {
			mu.Lock()
			werr = fmt.Errorf("write tombstone: %w", err)
			mu.Unlock()
		}
		return nil
	})
	defer forEach(batch, func(ctx context.Context, d Deleted) error {
		return c.deleteTree(context.WithoutCancel(ctx), tomb(d))
	})
	if werr != nil {
		return nil, werr
	}
	marked, err := c.markers(ctx)
	if err != nil {
		return nil, err
	}
	var spared []Deleted
	var todo []Deleted
	for _, d := range batch {
		if marked[d.Digest] {
			spared = append(spared, d)
		} else {
			todo = append(todo, d)
		}
	}
	var late []Deleted
	forEach(todo, func(ctx context.Context, d Deleted) error {
		if c.now().Sub(written) > sweepWithin {
			// Replicas stop honouring a tombstone after tombstoneTTL:
			// too late to delete safely; the next run will.
			mu.Lock()
			late = append(late, d)
			mu.Unlock()
			return nil
		}
		if err := del(ctx, d); err != nil {
			return err
		}
		mu.Lock()
		rep.add(d)
		c.metrics.deleted.WithLabelValues(d.Kind).Inc()
		if d.Kind == "blob" {
			c.metrics.reclaimed.Add(float64(d.Size))
		}
		mu.Unlock()
		return nil
	})
	return append(spared, late...), nil
}

// markers returns the digests marked so far in this run.
func (c *Collector) markers(ctx context.Context) (map[digest.Digest]bool, error) {
	out := map[digest.Digest]bool{}
	err := walk(ctx, c.driver, marksRoot, func(fi storagedriver.FileInfo) {
		rel := strings.TrimPrefix(fi.Path(), marksRoot+"/")
		alg, hex, ok := strings.Cut(rel, "/")
		if d, valid := digestFrom(alg, hex); ok && valid {
			out[d] = true
		}
	})
	return out, err
}

// deleteManifest removes a manifest from its repository: the revision
// link, the tag index entries naming it, its entry in its subject's
// referrers and its own referrers list.
func (c *Collector) deleteManifest(ctx context.Context, p *plan, d Deleted) error {
	r := p.inv.repos[d.Repository]
	if err := c.deleteTree(ctx, revisionDir(d.Repository, d.Digest)); err != nil {
		return err
	}
	for _, tag := range r.tagIndex[d.Digest] {
		if err := c.deleteTree(ctx, tagIndexDir(d.Repository, tag, d.Digest)); err != nil {
			return err
		}
	}
	if refs, err := p.marking.contents.get(ctx, stored(r, d.Digest)); err == nil && refs.subject != "" {
		if err := c.deleteTree(ctx, referrerEntry(d.Repository, refs.subject, d.Digest)); err != nil {
			return err
		}
	}
	if len(r.referrers[d.Digest]) > 0 {
		if err := c.deleteTree(ctx, referrerSubjectDir(d.Repository, d.Digest)); err != nil {
			return err
		}
	}
	return nil
}

// deleteBlob removes a blob's data, then the repositories' links to it.
func (c *Collector) deleteBlob(ctx context.Context, p *plan, d Deleted) error {
	if err := c.deleteTree(ctx, blobDir(d.Digest)); err != nil {
		return err
	}
	for _, l := range p.links[d.Digest] {
		if err := c.deleteTree(ctx, layerDir(l.repo, l.d)); err != nil {
			return err
		}
	}
	return nil
}

type link struct {
	repo string
	d    digest.Digest
}

// linksTo indexes the repositories' blob links by the blob they lead to.
func linksTo(inv *inventory) map[digest.Digest][]link {
	out := map[digest.Digest][]link{}
	for _, r := range inv.repos {
		for d := range r.layers {
			t := stored(r, d)
			out[t] = append(out[t], link{r.name, d})
		}
	}
	return out
}

func filter(ds []Deleted, keep func(Deleted) bool) []Deleted {
	var out []Deleted
	for _, d := range ds {
		if keep(d) {
			out = append(out, d)
		}
	}
	return out
}
