package cache

import (
	"context"
	"strings"
	"sync"

	"github.com/distribution/distribution/v3"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/internal/referrers"
	"github.com/portcullis/portcullis/replication"
	"github.com/portcullis/portcullis/scan/artifact"
)

const (
	// maxReferrerDepth bounds the referrers of referrers fetched (a
	// signature of an SBOM of an image is depth 2).
	maxReferrerDepth = 3
	// maxReferrers bounds the referrers copied for one manifest, all
	// depths together: a remote cannot make one pull copy an unbounded
	// graph.
	maxReferrers = 64
	// syncReferrerBlob is the largest referrer blob fetched before the
	// subject's tag is set (signatures, small attestations); larger ones
	// (SBOMs) follow in the background.
	syncReferrerBlob = 4 << 20
)

// cosignSuffixes are the tags cosign's tag schema stores a manifest's
// signatures, attestations and SBOMs under: sha256-<hex>.sig.
var cosignSuffixes = []string{".sig", ".att", ".sbom"}

// Referrers refreshes, at most once per tagTTL, the referrers of a cached
// manifest from the remote, so that the referrers API answers what the
// remote has merged with what the registry made itself (scan reports).
// Failures only mean the cached list is served.
func (s *Set) Referrers(ctx context.Context, name string, d digest.Digest) {
	c := s.owner(name)
	if c == nil {
		return
	}
	repo, err := s.repository(ctx, name)
	if err != nil {
		return
	}
	ms, err := repo.Manifests(ctx)
	if err != nil {
		return
	}
	if !s.exists(ctx, ms, d) {
		return
	}
	_, _ = s.flight(ctx, "referrers "+name+"@"+d.String(), func(ctx context.Context) (Result, error) {
		s.refreshReferrers(ctx, c, repo, name, d)
		return Hit, nil
	})
	s.metrics.request(c.Prefix, "referrers", Hit, nil)
}

// refreshReferrers fetches d's referrers unless they were fetched within
// the cache's tagTTL.
func (s *Set) refreshReferrers(ctx context.Context, c *cache, repo distribution.Repository, name string, d digest.Digest) {
	key := name + "@" + d.String()
	s.mu.Lock()
	last, ok := s.checks[key]
	s.mu.Unlock()
	if ok && s.now().Sub(last) < c.TagTTL {
		return
	}
	s.fetchReferrers(ctx, c, repo, name, d, maxReferrerDepth, new(int))
}

// fetchReferrers copies the referrers of subject from the remote: those the
// referrers API (or its tag schema) lists and cosign's sha256-<hex>.sig,
// .att and .sbom tags, each with its blobs, recursively to depth. A
// referrer that cannot be copied is logged and skipped: the subject is
// still served, and trust policies judge it by what was copied.
func (s *Set) fetchReferrers(ctx context.Context, c *cache, repo distribution.Repository, name string, subject digest.Digest, depth int, copied *int) {
	if depth <= 0 || *copied >= maxReferrers {
		return
	}
	s.mu.Lock()
	s.checks[name+"@"+subject.String()] = s.now()
	s.mu.Unlock()
	up := c.upstreamName(name)
	// One round trip for all the questions: the referrers API and
	// cosign's three tags, asked at once.
	prefix := strings.Replace(subject.String(), ":", "-", 1)
	var (
		wg    sync.WaitGroup
		descs []v1.Descriptor
		err   error
		tags  = make([]replication.Descriptor, len(cosignSuffixes))
	)
	wg.Go(func() { descs, err = c.Remote.Referrers(ctx, up, subject) })
	for i, suffix := range cosignSuffixes {
		wg.Go(func() {
			if got, err := c.Remote.HeadManifest(ctx, up, prefix+suffix); err == nil {
				tags[i] = got
			}
		})
	}
	wg.Wait()
	if err != nil {
		s.log.WarnContext(ctx, "referrers not fetched from the remote", "repo", name, "digest", subject, "upstream", c.Remote.Name(), "err", err)
	}
	for _, desc := range descs {
		if *copied >= maxReferrers {
			break
		}
		if artifact.Reserved(desc.ArtifactType) {
			continue
		}
		*copied++
		if _, err := s.copyReferrer(ctx, c, repo, name, desc.Digest); err != nil {
			s.log.WarnContext(ctx, "referrer not copied from the remote", "repo", name, "digest", desc.Digest, "subject", subject, "upstream", c.Remote.Name(), "err", err)
			continue
		}
		s.fetchReferrers(ctx, c, repo, name, desc.Digest, depth-1, copied)
	}
	for i, suffix := range cosignSuffixes {
		if *copied >= maxReferrers {
			break
		}
		tag, got := prefix+suffix, tags[i]
		if got.Digest == "" {
			continue // none, or the remote failed: the subject is served all the same
		}
		if local, err := repo.Tags(ctx).Get(ctx, tag); err == nil && local.Digest == got.Digest {
			continue
		}
		*copied++
		desc, err := s.copyReferrer(ctx, c, repo, name, got.Digest)
		if err != nil {
			s.log.WarnContext(ctx, "cosign tag not copied from the remote", "repo", name, "ref", tag, "upstream", c.Remote.Name(), "err", err)
			continue
		}
		if err := repo.Tags(ctx).Tag(ctx, tag, desc); err != nil {
			s.log.WarnContext(ctx, "cosign tag not set", "repo", name, "ref", tag, "err", err)
			continue
		}
		s.record(ctx, outbox.Event{Kind: outbox.KindTag, Repository: name, Digest: desc.Digest, Tag: tag, MediaType: desc.MediaType})
	}
}

// copyReferrer stores manifest d and its blobs, then records its event.
// Blobs up to syncReferrerBlob (signatures, which the verifier reads
// before the subject's tag is set) are fetched now, larger ones in the
// background.
func (s *Set) copyReferrer(ctx context.Context, c *cache, repo distribution.Repository, name string, d digest.Digest) (distribution.Descriptor, error) {
	ms, err := repo.Manifests(ctx)
	if err != nil {
		return distribution.Descriptor{}, err
	}
	existed := s.exists(ctx, ms, d)
	desc, err := s.storeManifest(ctx, c, repo, name, d.String())
	if err != nil {
		return desc, err
	}
	if existed {
		return desc, nil
	}
	m, err := ms.Get(ctx, d)
	if err != nil {
		return desc, err
	}
	if !isIndex(desc.MediaType) {
		var later []digest.Digest
		for _, b := range m.References() {
			if len(b.URLs) > 0 {
				continue
			}
			if b.Size > syncReferrerBlob {
				later = append(later, b.Digest)
				continue
			}
			if err := s.blobs.ensure(ctx, c, name, b.Digest); err != nil {
				return desc, err
			}
		}
		if len(later) > 0 {
			// One at a time, in one goroutine that Wait waits for: a
			// referrer listing thousands of large blobs does not start
			// thousands of fetches at once, nor outlive the storage.
			lctx := s.lifetime()
			s.background.Add(1)
			go func() {
				defer s.background.Done()
				for _, b := range later {
					if err := s.blobs.ensure(lctx, c, name, b); err != nil {
						s.log.WarnContext(lctx, "referrer blob not fetched", "repo", name, "digest", d, "blob", b, "err", err)
						return
					}
				}
			}()
		}
	}
	_, payload, _ := m.Payload()
	s.record(ctx, outbox.Event{Kind: outbox.KindPush, Repository: name, Digest: d, MediaType: desc.MediaType, Subject: referrers.SubjectOf(payload)})
	return desc, nil
}
