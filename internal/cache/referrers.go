package cache

import (
	"context"
	"strings"

	"github.com/distribution/distribution/v3"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/internal/referrers"
	"github.com/portcullis/portcullis/scan/artifact"
)

const (
	// maxReferrerDepth bounds the referrers of referrers fetched (a
	// signature of an SBOM of an image is depth 2).
	maxReferrerDepth = 3
	// maxReferrers bounds the referrers fetched per manifest: a remote
	// cannot make one pull copy an unbounded graph.
	maxReferrers = 64
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
	if ok, err := ms.Exists(ctx, d); err != nil || !ok {
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
	s.fetchReferrers(ctx, c, repo, name, d, maxReferrerDepth)
}

// fetchReferrers copies the referrers of subject from the remote: those the
// referrers API (or its tag schema) lists and cosign's sha256-<hex>.sig,
// .att and .sbom tags, each with its blobs, recursively to depth. A
// referrer that cannot be copied is logged and skipped: the subject is
// still served, and trust policies judge it by what was copied.
func (s *Set) fetchReferrers(ctx context.Context, c *cache, repo distribution.Repository, name string, subject digest.Digest, depth int) {
	if depth <= 0 {
		return
	}
	s.mu.Lock()
	s.checks[name+"@"+subject.String()] = s.now()
	s.mu.Unlock()
	up := c.upstreamName(name)
	descs, err := c.Remote.Referrers(ctx, up, subject)
	if err != nil {
		s.log.WarnContext(ctx, "referrers not fetched from the remote", "repo", name, "digest", subject, "upstream", c.Remote.Name(), "err", err)
	}
	n := 0
	for _, desc := range descs {
		if n >= maxReferrers {
			break
		}
		if artifact.Reserved(desc.ArtifactType) {
			continue
		}
		n++
		if _, err := s.copyReferrer(ctx, c, repo, name, desc.Digest); err != nil {
			s.log.WarnContext(ctx, "referrer not copied from the remote", "repo", name, "digest", desc.Digest, "subject", subject, "upstream", c.Remote.Name(), "err", err)
			continue
		}
		s.fetchReferrers(ctx, c, repo, name, desc.Digest, depth-1)
	}
	prefix := strings.Replace(subject.String(), ":", "-", 1)
	for _, suffix := range cosignSuffixes {
		tag := prefix + suffix
		got, err := c.Remote.HeadManifest(ctx, up, tag)
		if err != nil {
			continue // none, or the remote failed: the subject is served all the same
		}
		if local, err := repo.Tags(ctx).Get(ctx, tag); err == nil && local.Digest == got.Digest {
			continue
		}
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

// copyReferrer stores manifest d and all its blobs (signatures and SBOMs
// are read whole by the verifier), then records its event.
func (s *Set) copyReferrer(ctx context.Context, c *cache, repo distribution.Repository, name string, d digest.Digest) (distribution.Descriptor, error) {
	ms, err := repo.Manifests(ctx)
	if err != nil {
		return distribution.Descriptor{}, err
	}
	existed, _ := ms.Exists(ctx, d)
	desc, err := s.storeManifest(ctx, c, repo, name, d)
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
		for _, b := range m.References() {
			if len(b.URLs) > 0 {
				continue
			}
			if err := s.blobs.ensure(ctx, c, name, b.Digest); err != nil {
				return desc, err
			}
		}
	}
	_, payload, _ := m.Payload()
	s.record(ctx, outbox.Event{Kind: outbox.KindPush, Repository: name, Digest: d, MediaType: desc.MediaType, Subject: referrers.SubjectOf(payload)})
	return desc, nil
}
