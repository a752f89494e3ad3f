package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/internal/digests"
	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/internal/referrers"
	"github.com/portcullis/portcullis/replication"
	"github.com/portcullis/portcullis/scan/artifact"
)

// Result says how a read from a cache namespace was served.
type Result string

// The results, also the values of the X-Portcullis-Cache header.
const (
	// Hit is content served from storage without asking the remote (or a
	// tag the remote confirmed unchanged).
	Hit Result = "hit"
	// Miss is content fetched from the remote for this request.
	Miss Result = "miss"
	// Stale is a tag served past its TTL because the remote failed.
	Stale Result = "stale"
)

// fillTimeout bounds a manifest fill (the manifest, its referrers and
// their small blobs) that outlives the request that started it.
const fillTimeout = 5 * time.Minute

// Manifest makes the manifest name:ref (a tag or a digest) present in
// storage, fetching it from the remote when it is missing or its tag is
// older than the cache's tagTTL, and says how. A cached digest is served
// without calling the remote. It returns an OCI error for the client when
// the remote does not have the manifest (404) or fails and no stale copy
// may be served (502).
func (s *Set) Manifest(ctx context.Context, name, ref string) (Result, error) {
	c := s.owner(name)
	if c == nil {
		return Hit, nil
	}
	repo, err := s.repository(ctx, name)
	if err != nil {
		return "", err
	}
	if d, err := digest.Parse(ref); err == nil {
		res, err := s.manifestByDigest(ctx, c, repo, name, d)
		s.metrics.request(c.Prefix, "manifest", res, err)
		return res, err
	}
	res, err := s.manifestByTag(ctx, c, repo, name, ref)
	s.metrics.request(c.Prefix, "manifest", res, err)
	return res, err
}

func (s *Set) manifestByDigest(ctx context.Context, c *cache, repo distribution.Repository, name string, d digest.Digest) (Result, error) {
	ms, err := repo.Manifests(ctx)
	if err != nil {
		return "", err
	}
	if s.exists(ctx, ms, d) {
		s.state.pulled(ctx, c.pulledEvery(), name, d)
		return Hit, nil
	}
	_, err = s.flight(ctx, "manifest "+name+"@"+d.String(), func(ctx context.Context) (Result, error) {
		_, err := s.fill(ctx, c, repo, name, d.String(), "")
		return Miss, err
	})
	if err != nil {
		return "", s.upstreamError(c, "manifest "+d.String(), name, err)
	}
	return Miss, nil
}

func (s *Set) manifestByTag(ctx context.Context, c *cache, repo distribution.Repository, name, tag string) (Result, error) {
	local, err := repo.Tags(ctx).Get(ctx, tag)
	have := err == nil
	var checked time.Time
	if have {
		checked = s.state.checked(ctx, name, tag, c.TagTTL)
		if s.now().Sub(checked) < c.TagTTL {
			s.state.pulled(ctx, c.pulledEvery(), name, local.Digest)
			return Hit, nil
		}
	}
	key := name + ":" + tag
	if !have {
		if err := s.missing.recent(key, s.now()); err != nil {
			// The remote said so moments ago: asking again for every
			// client would spend its rate limit on nothing.
			return "", s.upstreamError(c, "tag "+tag, name, err)
		}
	}
	res, err := s.flight(ctx, "tag "+key, func(ctx context.Context) (Result, error) {
		return s.revalidate(ctx, c, repo, name, tag, local.Digest, have)
	})
	if errors.Is(err, replication.ErrNotFound) && !have {
		s.missing.remember(key, err, s.now().Add(min(c.TagTTL, maxMissingFor)))
	}
	if err == nil {
		if have {
			s.state.pulled(ctx, c.pulledEvery(), name, local.Digest)
		}
		return res, nil
	}
	if errors.Is(err, replication.ErrNotFound) || errors.Is(err, context.Canceled) {
		return "", s.upstreamError(c, "tag "+tag, name, err)
	}
	if have && c.StaleIfError > 0 && s.now().Sub(checked) < c.TagTTL+c.StaleIfError {
		s.log.WarnContext(ctx, "serving a stale cached tag: the remote failed", "repo", name, "ref", tag,
			"upstream", c.Remote.Name(), "checked", checked, "err", err)
		s.state.pulled(ctx, c.pulledEvery(), name, local.Digest)
		return Stale, nil
	}
	return "", s.upstreamError(c, "tag "+tag, name, err)
}

// revalidate asks the remote for tag's digest (one HEAD) and fetches the
// manifest when the tag moved or is new.
func (s *Set) revalidate(ctx context.Context, c *cache, repo distribution.Repository, name, tag string, local digest.Digest, have bool) (Result, error) {
	ref := tag // a new tag: one GET, no HEAD first
	if have {
		up, err := c.Remote.HeadManifest(ctx, c.upstreamName(name), tag)
		if err != nil {
			return "", err
		}
		if up.Digest == local {
			// Signatures added upstream since: asked in the background,
			// so that the client's path holds one HEAD.
			s.background.Add(1)
			go func() {
				defer s.background.Done()
				_, _ = s.flight(s.lifetime(), "referrers "+name+"@"+local.String(), func(ctx context.Context) (Result, error) {
					s.refreshReferrers(ctx, c, repo, name, local)
					return Hit, nil
				})
			}()
			s.state.check(ctx, name, tag, local)
			return Hit, nil
		}
		ref = up.Digest.String()
	}
	desc, err := s.fill(ctx, c, repo, name, ref, tag)
	if err != nil {
		return "", err
	}
	if err := repo.Tags(ctx).Tag(ctx, tag, desc); err != nil {
		return "", fmt.Errorf("tag %s:%s: %w", name, tag, err)
	}
	s.state.check(ctx, name, tag, desc.Digest)
	s.complete(c, name, desc, tag)
	return Miss, nil
}

// fill stores the manifest ref (a digest, or a tag) of the remote, byte
// for byte, with its referrers. An image's event (and so its scan) follows
// once its blobs are stored, unless tag is set: the caller tags it and
// completes it then.
func (s *Set) fill(ctx context.Context, c *cache, repo distribution.Repository, name, ref, tag string) (distribution.Descriptor, error) {
	desc, err := s.storeManifest(ctx, c, repo, name, ref)
	if err != nil {
		return desc, err
	}
	s.state.pulled(ctx, c.pulledEvery(), name, desc.Digest)
	s.fetchReferrers(ctx, c, repo, name, desc.Digest, maxReferrerDepth, new(int))
	if tag == "" {
		s.complete(c, name, desc, "")
	}
	return desc, nil
}

// storeManifest fetches manifest ref (a digest, or a tag) from the remote
// and stores its exact bytes; the manifest's blobs and an index's children
// come later.
func (s *Set) storeManifest(ctx context.Context, c *cache, repo distribution.Repository, name, ref string) (distribution.Descriptor, error) {
	ms, err := repo.Manifests(ctx, storage.SkipLayerVerification())
	if err != nil {
		return distribution.Descriptor{}, err
	}
	if d, err := digest.Parse(ref); err == nil && s.exists(ctx, ms, d) {
		m, err := ms.Get(ctx, d)
		if err != nil {
			return distribution.Descriptor{}, fmt.Errorf("read cached manifest %s: %w", d, err)
		}
		mt, payload, _ := m.Payload()
		return distribution.Descriptor{Digest: d, MediaType: mt, Size: int64(len(payload))}, nil
	}
	// By tag, the digest is that of the remote's bytes.
	up, body, err := c.Remote.GetManifest(ctx, c.upstreamName(name), ref)
	if err != nil {
		return distribution.Descriptor{}, err
	}
	d := up.Digest
	// Never taken from a remote, which may be another registry with a
	// scanner of its own.
	if what := artifact.ReservedIn(body); what != "" {
		return distribution.Descriptor{}, fmt.Errorf("%w: the remote serves %s, which only the registry's own scanner writes", errRefused, what)
	}
	mt := up.MediaType
	if mt == "" || mt == "application/json" || mt == "text/plain" {
		mt = mediaTypeOf(body)
	}
	m, _, err := distribution.UnmarshalManifest(mt, body)
	if err != nil {
		return distribution.Descriptor{}, fmt.Errorf("%w: manifest %s of media type %q does not parse: %v", errRefused, d, mt, err)
	}
	if !digests.Canonical(d) {
		ctx = digests.WithRequested(ctx, d)
	}
	got, err := ms.Put(ctx, m)
	if err != nil {
		return distribution.Descriptor{}, fmt.Errorf("store manifest %s: %w", d, err)
	}
	if digests.Canonical(d) && got != d {
		return distribution.Descriptor{}, fmt.Errorf("store manifest %s: stored as %s", d, got)
	}
	return distribution.Descriptor{Digest: d, MediaType: mt, Size: int64(len(body))}, nil
}

func (s *Set) exists(ctx context.Context, ms distribution.ManifestService, d digest.Digest) bool {
	ok, err := ms.Exists(ctx, d)
	return err == nil && ok
}

// complete fetches the blobs of manifest desc that are missing (an image's
// config and layers), then records its event, in the background: the
// scanner reads the layers it is told about.
func (s *Set) complete(c *cache, name string, desc distribution.Descriptor, tag string) {
	ctx := s.lifetime()
	s.background.Add(1)
	go func() {
		defer s.background.Done()
		repo, err := s.repository(ctx, name)
		if err != nil {
			return
		}
		ms, err := repo.Manifests(ctx)
		if err != nil {
			return
		}
		m, err := ms.Get(ctx, desc.Digest)
		if err != nil {
			s.log.WarnContext(ctx, "cached manifest not readable", "repo", name, "digest", desc.Digest, "err", err)
			return
		}
		_, payload, _ := m.Payload()
		var size int64
		if !isIndex(desc.MediaType) {
			for _, b := range m.References() {
				if len(b.URLs) > 0 {
					continue // non-distributable: not on the remote
				}
				size += b.Size
				if err := s.blobs.ensure(ctx, c, name, b.Digest); err != nil {
					s.log.WarnContext(ctx, "cached image incomplete: a blob could not be fetched", "repo", name,
						"digest", desc.Digest, "blob", b.Digest, "upstream", c.Remote.Name(), "err", err)
					return
				}
			}
		}
		s.state.sized(ctx, name, desc.Digest, size+int64(len(payload)))
		kind := outbox.KindPush
		if tag != "" {
			kind = outbox.KindTag
		}
		s.record(ctx, outbox.Event{Kind: kind, Repository: name, Digest: desc.Digest, Tag: tag, MediaType: desc.MediaType,
			Subject: referrers.SubjectOf(payload)})
	}()
}

func (s *Set) record(ctx context.Context, e outbox.Event) {
	if s.events == nil {
		return
	}
	e.Time = s.now()
	if _, err := s.events.Append(ctx, e); err != nil {
		s.log.ErrorContext(ctx, "record event of cached content", "repo", e.Repository, "digest", e.Digest, "err", err)
	}
}

// errRefused marks content the remote sent that the registry does not
// store.
var errRefused = errors.New("refused")

// upstreamError turns a failed fill into the client's OCI error.
func (s *Set) upstreamError(c *cache, what, name string, err error) error {
	var ce *Error
	switch {
	case errors.As(err, &ce):
		return err
	case errors.Is(err, replication.ErrNotFound):
		return errcode.ErrorCodeManifestUnknown.WithMessage(fmt.Sprintf("remote %s has no %s in %s", c.Remote.Name(), what, c.upstreamName(name)))
	case errors.Is(err, replication.ErrUnavailable), errors.Is(err, replication.ErrUnauthorized),
		errors.Is(err, replication.ErrDigestMismatch), errors.Is(err, replication.ErrTooLarge), errors.Is(err, errRefused):
		// Before the context errors: a remote's response timeout is
		// unavailable and also matches context.DeadlineExceeded.
		return &Error{Status: http.StatusBadGateway, Code: "UNAVAILABLE", Message: fmt.Sprintf("pull-through cache %s: %s of %s: %v", c.Prefix, what, name, err)}
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return &Error{Status: http.StatusBadGateway, Code: "UNAVAILABLE",
		Message: fmt.Sprintf("pull-through cache %s could not store %s of %s", c.Prefix, what, name), Err: err}
}

func mediaTypeOf(body []byte) string {
	var m struct {
		MediaType string            `json:"mediaType"`
		Manifests []json.RawMessage `json:"manifests"`
	}
	_ = json.Unmarshal(body, &m)
	switch {
	case m.MediaType != "":
		return m.MediaType
	case m.Manifests != nil:
		return "application/vnd.oci.image.index.v1+json"
	}
	return "application/vnd.oci.image.manifest.v1+json"
}

func isIndex(mt string) bool {
	return mt == "application/vnd.oci.image.index.v1+json" || mt == "application/vnd.docker.distribution.manifest.list.v2+json"
}
