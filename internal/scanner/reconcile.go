package scanner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/internal/outbox"
)

// reconcileInterval is how often the reconcile pass runs after the first,
// which runs as soon as a database is loaded.
const reconcileInterval = time.Hour

// reconcileLoop runs the reconcile pass once a database is loaded, then
// every reconcileInterval, until ctx is done.
func (s *Service) reconcileLoop(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-s.loaded:
	}
	t := time.NewTicker(reconcileInterval)
	defer t.Stop()
	for {
		if err := s.reconcile(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "reconcile scans", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reconcile repairs what the outbox missed (a lost metadata database, an
// append that failed): it walks every tag of every repository and queues
// the images that have no verdict. An image with a report among its
// referrers in storage is not scanned again, so it needs no metadata
// database. It returns ctx's error or the catalog's.
func (s *Service) reconcile(ctx context.Context) error {
	start := time.Now()
	repos, queued := 0, 0
	err := s.catalog.Enumerate(ctx, func(repo string) error {
		if repo == DBRepository {
			return nil
		}
		repos++
		n, err := s.reconcileRepo(ctx, repo)
		queued += n
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// One repository's trouble does not stop the pass.
			s.log.WarnContext(ctx, "reconcile repository", "repo", repo, "err", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk repositories: %w", err)
	}
	s.reconciles.Inc()
	s.log.InfoContext(ctx, "reconciled scans with the registry's tags", "repos", repos, "queued", queued, "duration", time.Since(start))
	return nil
}

// reconcileRepo queues the tagged images of repo that have no verdict, and
// returns how many it queued.
func (s *Service) reconcileRepo(ctx context.Context, repo string) (int, error) {
	r, err := s.open(ctx, repo)
	if err != nil {
		return 0, err
	}
	tagService := r.Tags(ctx)
	tags, err := tagService.All(ctx)
	var repoUnknown distribution.ErrRepositoryUnknown
	if errors.As(err, &repoUnknown) {
		return 0, nil // no tags
	}
	if err != nil {
		return 0, fmt.Errorf("list tags: %w", err)
	}
	seen := map[digest.Digest]bool{}
	queued := 0
	for _, tag := range tags {
		if referrerTag(tag) {
			continue
		}
		desc, err := tagService.Get(ctx, tag)
		var tagUnknown distribution.ErrTagUnknown
		if errors.As(err, &tagUnknown) {
			continue // deleted meanwhile
		}
		if err != nil {
			return queued, fmt.Errorf("tag %s: %w", tag, err)
		}
		if seen[desc.Digest] {
			continue
		}
		seen[desc.Digest] = true
		done, err := s.hasVerdict(ctx, repo, desc.Digest)
		if err != nil {
			return queued, err
		}
		if done {
			continue
		}
		mt, payload, found, err := readManifest(ctx, r, desc.Digest)
		if err != nil {
			return queued, err
		}
		if !found {
			continue
		}
		switch classify(mt, payload) {
		case kindIndex:
			n, err := s.expandIndex(ctx, repo, payload)
			queued += n
			s.reconciled.Add(float64(n))
			if err != nil {
				return queued, err
			}
		case kindImage:
			if _, err := s.box.Append(ctx, outbox.Event{
				Kind: outbox.KindTag, Repository: repo, Digest: desc.Digest, Tag: tag, MediaType: mt, Time: time.Now(),
			}); err != nil {
				return queued, err
			}
			queued++
			s.reconciled.Inc()
		}
	}
	return queued, nil
}
