package cache

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/internal/outbox"
)

// evictEvery is how often the caches with bounds are checked.
const evictEvery = 10 * time.Minute

func (s *Set) evictLoop(ctx context.Context) error {
	bounded := false
	for _, c := range s.caches {
		bounded = bounded || c.MaxAge > 0 || c.MaxSize > 0
	}
	if !bounded {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(s.evictEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			for _, c := range s.caches {
				if _, err := s.Evict(ctx, c.Prefix); err != nil {
					s.log.WarnContext(ctx, "cache eviction", "cache", c.Prefix, "err", err)
				}
			}
		}
	}
}

// Evict removes from the cache at prefix the manifests (with their tags
// and referrers) nobody pulled for longer than its maxAge, then the least
// recently pulled until what it holds fits maxSize. Blobs stay for garbage
// collection, which frees those no other manifest uses. It returns how many
// manifests it removed.
func (s *Set) Evict(ctx context.Context, prefix string) (int, error) {
	var c *cache
	for _, x := range s.caches {
		if x.Prefix == prefix {
			c = x
		}
	}
	if c == nil || (c.MaxAge <= 0 && c.MaxSize <= 0) {
		return 0, nil
	}
	ms, err := s.state.manifests(ctx, c.Prefix)
	if err != nil {
		return 0, err
	}
	defer s.forgetHeld(c.Prefix)
	slices.SortFunc(ms, func(a, b cachedManifest) int { return a.Pulled.Compare(b.Pulled) })
	var total int64
	for _, m := range ms {
		total += m.Size
	}
	now := s.now()
	removed := 0
	for _, m := range ms {
		old := c.MaxAge > 0 && now.Sub(m.Pulled) > c.MaxAge
		big := c.MaxSize > 0 && total > c.MaxSize
		if !old && !big {
			break // sorted by last pull: the rest are newer
		}
		if err := s.evict(ctx, m.Repository, m.Digest); err != nil {
			s.log.WarnContext(ctx, "cached manifest not evicted", "repo", m.Repository, "digest", m.Digest, "err", err)
			continue
		}
		total -= m.Size
		removed++
		s.metrics.evicted.WithLabelValues(c.Prefix).Inc()
	}
	return removed, nil
}

// evict deletes manifest d of name, the tags on it and its referrers (and
// cosign's tags for it).
func (s *Set) evict(ctx context.Context, name string, d digest.Digest) error {
	repo, err := s.repository(ctx, name)
	if err != nil {
		return err
	}
	tags, err := repo.Tags(ctx).Lookup(ctx, distribution.Descriptor{Digest: d})
	if err != nil {
		tags = nil
	}
	prefix := strings.Replace(d.String(), ":", "-", 1)
	for _, suffix := range cosignSuffixes {
		t := prefix + suffix
		if desc, err := repo.Tags(ctx).Get(ctx, t); err == nil {
			_ = repo.Tags(ctx).Untag(ctx, t)
			s.deleteManifest(ctx, repo, name, desc.Digest, t)
		}
	}
	for _, t := range tags {
		if err := repo.Tags(ctx).Untag(ctx, t); err != nil {
			return err
		}
		s.record(ctx, outbox.Event{Kind: outbox.KindDelete, Repository: name, Tag: t})
	}
	if s.refs != nil {
		if list, err := s.refs.List(ctx, name, d); err == nil {
			for _, r := range list {
				s.deleteManifest(ctx, repo, name, r.Digest, "")
			}
		}
	}
	s.deleteManifest(ctx, repo, name, d, "")
	s.state.forget(ctx, name, d, tags)
	return nil
}

func (s *Set) deleteManifest(ctx context.Context, repo distribution.Repository, name string, d digest.Digest, tag string) {
	ms, err := repo.Manifests(ctx)
	if err != nil {
		return
	}
	if err := ms.Delete(ctx, d); err != nil {
		return
	}
	s.record(ctx, outbox.Event{Kind: outbox.KindDelete, Repository: name, Digest: d, Tag: tag})
}
