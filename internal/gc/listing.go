package gc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
)

// repoState is what one listing found in a repository.
type repoState struct {
	name      string
	revisions map[digest.Digest]time.Time
	aliases   map[digest.Digest]digest.Digest // sha512 revision and layer links: alias → stored digest
	tags      map[string]*tagState
	tagIndex  map[digest.Digest][]string // digest → tags whose index names it
	layers    map[digest.Digest]bool
	referrers map[digest.Digest][]digest.Digest // subject → referrers
	uploads   map[string]time.Time              // upload id → last change
	pulls     map[digest.Digest]time.Time
}

type tagState struct {
	name     string
	digest   digest.Digest
	modified time.Time
}

type blobState struct {
	size     int64
	modified time.Time
}

// inventory is the listing of the whole storage.
type inventory struct {
	repos map[string]*repoState
	blobs map[digest.Digest]blobState
}

func (inv *inventory) repo(name string) *repoState {
	r := inv.repos[name]
	if r == nil {
		r = &repoState{name: name, revisions: map[digest.Digest]time.Time{}, aliases: map[digest.Digest]digest.Digest{},
			tags: map[string]*tagState{}, tagIndex: map[digest.Digest][]string{}, layers: map[digest.Digest]bool{},
			referrers: map[digest.Digest][]digest.Digest{}, uploads: map[string]time.Time{}, pulls: map[digest.Digest]time.Time{}}
		inv.repos[name] = r
	}
	return r
}

// walk calls f for each file below root; a missing root is empty.
func walk(ctx context.Context, d storagedriver.StorageDriver, root string, f func(fi storagedriver.FileInfo)) error {
	err := d.Walk(ctx, root, func(fi storagedriver.FileInfo) error {
		if !fi.IsDir() {
			f(fi)
		}
		return nil
	})
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list %s: %w", root, err)
	}
	return nil
}

// list reads the repositories (links, tags, referrers, uploads), the pull
// times and, last, the blobs: a blob stored after the repositories were
// read is a candidate only if markers do not protect it.
func (c *Collector) list(ctx context.Context, pulls bool) (*inventory, error) {
	inv := &inventory{repos: map[string]*repoState{}, blobs: map[digest.Digest]blobState{}}
	var aliasLinks []aliasLink
	err := walk(ctx, c.driver, reposRoot, func(fi storagedriver.FileInfo) {
		rel := strings.TrimPrefix(fi.Path(), reposRoot+"/")
		segs := strings.Split(rel, "/")
		for i, s := range segs {
			if i == 0 || !strings.HasPrefix(s, "_") {
				continue
			}
			repo := strings.Join(segs[:i], "/")
			if a, ok := inv.record(repo, s, segs[i+1:], fi); ok {
				aliasLinks = append(aliasLinks, a)
			}
			return
		}
	})
	if err != nil {
		return nil, err
	}
	if err := c.readTags(ctx, inv); err != nil {
		return nil, err
	}
	if err := c.readAliases(ctx, inv, aliasLinks); err != nil {
		return nil, err
	}
	if pulls {
		err := walk(ctx, c.driver, pullsRoot, func(fi storagedriver.FileInfo) {
			rel := strings.TrimPrefix(fi.Path(), pullsRoot+"/")
			segs := strings.Split(rel, "/")
			if len(segs) < 3 {
				return
			}
			d, ok := digestFrom(segs[len(segs)-2], segs[len(segs)-1])
			if !ok {
				return
			}
			if r := inv.repos[strings.Join(segs[:len(segs)-2], "/")]; r != nil {
				r.pulls[d] = fi.ModTime()
			}
		})
		if err != nil {
			return nil, err
		}
	}
	err = walk(ctx, c.driver, blobsRoot, func(fi storagedriver.FileInfo) {
		rel := strings.TrimPrefix(fi.Path(), blobsRoot+"/")
		segs := strings.Split(rel, "/")
		if len(segs) != 4 || segs[3] != "data" {
			return
		}
		if d, ok := digestFrom(segs[0], segs[2]); ok {
			inv.blobs[d] = blobState{size: fi.Size(), modified: fi.ModTime()}
		}
	})
	if err != nil {
		return nil, err
	}
	return inv, nil
}

type aliasLink struct {
	repo     string
	path     string
	d        digest.Digest
	revision bool
}

// record files one path below a repository's directory named kind.
func (inv *inventory) record(repo, kind string, rest []string, fi storagedriver.FileInfo) (aliasLink, bool) {
	n := len(rest)
	switch kind {
	case "_manifests":
		switch {
		case n == 4 && rest[0] == "revisions" && rest[3] == "link":
			if d, ok := digestFrom(rest[1], rest[2]); ok {
				inv.repo(repo).revisions[d] = fi.ModTime()
				if d.Algorithm() != digest.Canonical {
					return aliasLink{repo, fi.Path(), d, true}, true
				}
			}
		case n == 4 && rest[0] == "tags" && rest[2] == "current" && rest[3] == "link":
			inv.repo(repo).tags[rest[1]] = &tagState{name: rest[1], modified: fi.ModTime()}
		case n == 6 && rest[0] == "tags" && rest[2] == "index" && rest[5] == "link":
			if d, ok := digestFrom(rest[3], rest[4]); ok {
				r := inv.repo(repo)
				r.tagIndex[d] = append(r.tagIndex[d], rest[1])
			}
		}
	case "_layers":
		if n == 3 && rest[2] == "link" {
			if d, ok := digestFrom(rest[0], rest[1]); ok {
				inv.repo(repo).layers[d] = true
				if d.Algorithm() != digest.Canonical {
					return aliasLink{repo, fi.Path(), d, false}, true
				}
			}
		}
	case "_uploads":
		if n >= 2 {
			r := inv.repo(repo)
			if fi.ModTime().After(r.uploads[rest[0]]) {
				r.uploads[rest[0]] = fi.ModTime()
			}
		}
	case "_referrers":
		if n == 4 && rest[0] == "subjects" {
			subject, ok := digestFrom(rest[1], rest[2])
			alg, hex, found := strings.Cut(rest[3], "-")
			referrer, ok2 := digestFrom(alg, hex)
			if ok && found && ok2 {
				r := inv.repo(repo)
				r.referrers[subject] = append(r.referrers[subject], referrer)
			}
		}
	}
	return aliasLink{}, false
}

// readTags reads what each tag points at.
func (c *Collector) readTags(ctx context.Context, inv *inventory) error {
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.workers)
	for _, r := range inv.repos {
		for _, t := range r.tags {
			g.Go(func() error {
				d, err := c.readLink(gctx, tagCurrent(r.name, t.name))
				if err != nil {
					var nf storagedriver.PathNotFoundError
					if errors.As(err, &nf) {
						return nil // deleted since the listing
					}
					return err
				}
				mu.Lock()
				t.digest = d
				mu.Unlock()
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for _, r := range inv.repos {
		for name, t := range r.tags {
			if t.digest == "" {
				delete(r.tags, name)
			}
		}
	}
	return nil
}

func (c *Collector) readAliases(ctx context.Context, inv *inventory, links []aliasLink) error {
	for _, a := range links {
		d, err := c.readLink(ctx, a.path)
		if err != nil {
			var nf storagedriver.PathNotFoundError
			if errors.As(err, &nf) {
				continue
			}
			return err
		}
		inv.repos[a.repo].aliases[a.d] = d
	}
	return nil
}

func (c *Collector) readLink(ctx context.Context, p string) (digest.Digest, error) {
	b, err := c.driver.GetContent(ctx, p)
	if err != nil {
		return "", err
	}
	d, err := digest.Parse(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("link %s: %w", p, err)
	}
	return d, nil
}
