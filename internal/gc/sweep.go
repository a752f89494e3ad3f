package gc

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

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
		c.tell(ctx, d)
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
			func(d Deleted) []target { return c.manifestTargets(ctx, p, d) }, forEach, rep)
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
			func(d Deleted) []target { return blobTargets(p, d) }, forEach, rep)
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

	if err := c.sweepUnnamedData(ctx, rep); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// unnamedDataAge is the least age of data that no name reaches before it
// is deleted, whatever the grace period: see DeleteUnnamedData.
const unnamedDataAge = time.Hour

// unnamedDataDeleter is a driver that keeps the data of large blobs apart
// from the paths that name them (S3), and so can be left data that no path
// names.
type unnamedDataDeleter interface {
	DeleteUnnamedData(ctx context.Context, before time.Time) (int, int64, error)
}

// sweepUnnamedData deletes the data no path names, when the driver keeps
// such data.
func (c *Collector) sweepUnnamedData(ctx context.Context, rep *Report) error {
	dd, ok := c.driver.(unnamedDataDeleter)
	if !ok {
		return nil
	}
	n, size, err := dd.DeleteUnnamedData(ctx, c.now().Add(-max(c.grace, unnamedDataAge)))
	if err != nil {
		return fmt.Errorf("delete unnamed data: %w", err)
	}
	rep.UnnamedData += n
	rep.BytesReclaimed += size
	c.metrics.deleted.WithLabelValues("data").Add(float64(n))
	c.metrics.reclaimed.Add(float64(size))
	return nil
}

// tombstoned runs the protocol for one batch: tombstone each candidate,
// then read the markers, then delete the unmarked ones still within
// sweepWithin of their tombstone, then remove the tombstones. It returns
// the candidates it spared.
func (c *Collector) tombstoned(ctx context.Context, batch []Deleted, tomb func(Deleted) string,
	targets func(Deleted) []target, forEach func([]Deleted, func(context.Context, Deleted) error), rep *Report) ([]Deleted, error) {
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
	removeTombstones := func(ds []Deleted) {
		ts := make([]target, 0, len(ds))
		for _, d := range ds {
			ts = append(ts, target{file: tomb(d)})
		}
		if err := c.deleteTargets(context.WithoutCancel(ctx), ts); err != nil {
			c.log.WarnContext(ctx, "gc tombstones not removed; they expire", "err", err)
		}
	}
	if werr != nil {
		removeTombstones(batch)
		return nil, werr
	}
	marked, err := c.markers(ctx)
	if err != nil {
		removeTombstones(batch)
		return nil, err
	}
	var spared, todo []Deleted
	for _, d := range batch {
		if marked[d.Digest] {
			spared = append(spared, d)
		} else {
			todo = append(todo, d)
		}
	}
	// What is spared is released at once: requests wait on its tombstone.
	removeTombstones(spared)
	defer removeTombstones(todo)
	if c.now().Sub(written) > sweepWithin {
		// Replicas stop honouring a tombstone after tombstoneTTL: too late
		// to delete safely; the next run will.
		return append(spared, todo...), nil
	}
	var ts []target
	for _, d := range todo {
		ts = append(ts, targets(d)...)
	}
	if err := c.deleteTargets(ctx, ts); err != nil {
		return nil, err
	}
	for _, d := range todo {
		rep.add(d)
		c.metrics.deleted.WithLabelValues(d.Kind).Inc()
		if d.Kind == "blob" {
			c.metrics.reclaimed.Add(float64(d.Size))
		}
		c.tell(ctx, d)
	}
	return spared, nil
}

// tell passes a deleted tag or manifest to Options.Deleted.
func (c *Collector) tell(ctx context.Context, d Deleted) {
	if c.deleted != nil && (d.Kind == "tag" || d.Kind == "manifest") {
		c.deleted(ctx, d)
	}
}

// target is one thing to delete: a file, and the tree to delete instead
// where the driver cannot delete files in batches ("" for the file).
type target struct {
	file, tree string
}

// fileDeleter is a driver that deletes many files per request (S3).
type fileDeleter interface {
	DeleteFiles(ctx context.Context, paths []string) error
}

// deleteTargets deletes ts: in batches when the driver can, else each
// tree concurrently.
func (c *Collector) deleteTargets(ctx context.Context, ts []target) error {
	if fd, ok := c.driver.(fileDeleter); ok {
		paths := make([]string, len(ts))
		for i, t := range ts {
			paths[i] = t.file
		}
		return fd.DeleteFiles(ctx, paths)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.workers)
	for _, t := range ts {
		p := t.tree
		if p == "" {
			p = t.file
		}
		g.Go(func() error { return c.deleteTree(gctx, p) })
	}
	return g.Wait()
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

// manifestTargets are what removes a manifest from its repository: the
// revision link, the tag index entries naming it, its entry in its
// subject's referrers, the entries of its own referrers, and its pull time.
func (c *Collector) manifestTargets(ctx context.Context, p *plan, d Deleted) []target {
	r := p.inv.repos[d.Repository]
	rev := revisionDir(d.Repository, d.Digest)
	ts := []target{{file: path.Join(rev, "link"), tree: rev}, {file: pullPath(d.Repository, d.Digest)}}
	for _, tag := range r.tagIndex[d.Digest] {
		ix := tagIndexDir(d.Repository, tag, d.Digest)
		ts = append(ts, target{file: path.Join(ix, "link"), tree: ix})
	}
	if refs, err := p.marking.contents.get(ctx, stored(r, d.Digest)); err == nil && refs.subject != "" {
		ts = append(ts, target{file: referrerEntry(d.Repository, refs.subject, d.Digest)})
	}
	for _, ref := range r.referrers[d.Digest] {
		ts = append(ts, target{file: referrerEntry(d.Repository, d.Digest, ref), tree: referrerSubjectDir(d.Repository, d.Digest)})
	}
	return ts
}

// blobTargets are a blob's data and the repositories' links to it.
func blobTargets(p *plan, d Deleted) []target {
	ts := []target{{file: blobData(d.Digest), tree: blobDir(d.Digest)}}
	for _, l := range p.links[d.Digest] {
		dir := layerDir(l.repo, l.d)
		ts = append(ts, target{file: path.Join(dir, "link"), tree: dir})
	}
	return ts
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
