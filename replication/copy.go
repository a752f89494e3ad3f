package replication

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// Source is what a copy reads: another registry (a *Remote) or this
// registry's own storage.
type Source interface {
	// GetManifest returns the manifest ref (a tag or digest) of repo, its
	// bytes as stored. Errors wrap ErrNotFound when there is none.
	GetManifest(ctx context.Context, repo, ref string) (Descriptor, []byte, error)
	// GetBlob opens the blob d of repo and returns its length.
	GetBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, int64, error)
	// Referrers lists the manifests whose subject is d.
	Referrers(ctx context.Context, repo string, d digest.Digest) ([]v1.Descriptor, error)
}

// Destination is what a copy writes: a *Remote.
type Destination interface {
	HeadBlob(ctx context.Context, repo string, d digest.Digest) (Descriptor, error)
	MountBlob(ctx context.Context, repo, from string, d digest.Digest) (bool, error)
	UploadBlob(ctx context.Context, repo string, d digest.Digest, size int64, body io.Reader) error
	HeadManifest(ctx context.Context, repo, ref string) (Descriptor, error)
	PutManifest(ctx context.Context, repo, ref, mediaType string, body []byte) (digest.Digest, error)
}

var (
	_ Source      = (*Remote)(nil)
	_ Destination = (*Remote)(nil)
)

// cosignSuffixes are the tags cosign attaches to a subject <alg>-<hex>.
var cosignSuffixes = []string{".sig", ".att", ".sbom"}

// Copier copies images with everything that refers to them from a Source
// to a Destination, digests unchanged. It is safe for concurrent use.
type Copier struct {
	src Source
	dst Destination
	// Blobs is how many blobs of one image are copied at once.
	blobs int
	// skip tells the referrers that are not copied.
	skip func(body []byte) bool
	// mounts remembers, per blob, a destination repository that holds it,
	// so another repository can mount it instead of uploading it again.
	mu     sync.Mutex
	mounts map[digest.Digest]string
}

// CopierOptions configure a Copier; the zero value copies every referrer.
type CopierOptions struct {
	// SkipReferrer, when set, is asked about each referrer's manifest
	// (its bytes as the source stores them): a referrer it reports true
	// for is not copied, nor what refers to it. Registries keep artifacts
	// of their own among referrers (a scanner's reports) that another
	// registry must make itself.
	SkipReferrer func(body []byte) bool
}

// maxMounts bounds the blobs whose destination repository is remembered.
const maxMounts = 100_000

// NewCopier returns a Copier from src to dst, configured by the first of
// opts when given.
func NewCopier(src Source, dst Destination, opts ...CopierOptions) *Copier {
	c := &Copier{src: src, dst: dst, blobs: 4, mounts: map[digest.Digest]string{}}
	if len(opts) > 0 {
		c.skip = opts[0].SkipReferrer
	}
	return c
}

// Result says what one copy did.
type Result struct {
	// Digest is the copied manifest's digest.
	Digest digest.Digest
	// Manifests counts the manifests stored at the destination (those
	// already there are not counted); Uploaded and Mounted the blobs.
	Manifests, Uploaded, Mounted int
	// Bytes counts the blob bytes uploaded.
	Bytes int64
}

// copyRun is the state of one Copy call.
type copyRun struct {
	c                *Copier
	srcRepo, dstRepo string
	seen             map[digest.Digest]bool
	manifests        int
	uploaded         atomic.Int64
	mounted          atomic.Int64
	bytes            atomic.Int64

	// stored are the manifests this copy PUT at the destination.
	stored map[digest.Digest]bool
}

// Copy copies the manifest ref (a tag or a digest) of srcRepo to dstRepo at
// the destination: the blobs of each manifest (the destination is asked
// first, then a mount from another repository where this Copier put the
// blob is tried, then it is uploaded), the children of an index before the
// index, each manifest by digest, then every referrer, recursively (the
// referrers API and cosign's <alg>-<hex>.sig/.att/.sbom tags), and the tag
// last, so that the destination's admission sees the signatures before the
// tag. What the destination already has is not sent again. Errors are
// the Source's and the Destination's (see Permanent).
func (c *Copier) Copy(ctx context.Context, srcRepo, dstRepo, ref string) (Result, error) {
	run := &copyRun{c: c, srcRepo: srcRepo, dstRepo: dstRepo, seen: map[digest.Digest]bool{}, stored: map[digest.Digest]bool{}}
	desc, body, err := c.src.GetManifest(ctx, srcRepo, ref)
	if err != nil {
		return Result{}, err
	}
	if err := run.manifestTree(ctx, desc.Digest, desc.MediaType, body); err != nil {
		return run.result(desc.Digest), err
	}
	if err := run.referrers(ctx, desc.Digest); err != nil {
		return run.result(desc.Digest), err
	}
	if tag, _, _ := parseRef(ref); tag != "" {
		// A manifest this copy stored was not there: no tag names it yet.
		if !run.stored[desc.Digest] {
			if have, err := c.dst.HeadManifest(ctx, dstRepo, tag); err == nil && have.Digest == desc.Digest {
				return run.result(desc.Digest), nil
			}
		}
		if _, err := c.dst.PutManifest(ctx, dstRepo, tag, desc.MediaType, body); err != nil {
			return run.result(desc.Digest), err
		}
		run.manifests++
	}
	return run.result(desc.Digest), nil
}

func (r *copyRun) result(d digest.Digest) Result {
	return Result{Digest: d, Manifests: r.manifests, Uploaded: int(r.uploaded.Load()), Mounted: int(r.mounted.Load()), Bytes: r.bytes.Load()}
}

// parsedManifest is what a copy needs of a manifest or an index.
type parsedManifest struct {
	MediaType string          `json:"mediaType"`
	Config    *v1.Descriptor  `json:"config"`
	Layers    []v1.Descriptor `json:"layers"`
	Manifests []v1.Descriptor `json:"manifests"`
	Blobs     []v1.Descriptor `json:"blobs"` // ORAS artifact manifests
}

// manifestTree stores the manifest d (body) and what it references at the
// destination by digest, children first. A manifest the destination has
// already is taken as complete: the destination checked its references
// when it was stored.
func (r *copyRun) manifestTree(ctx context.Context, d digest.Digest, mediaType string, body []byte) error {
	if r.seen[d] {
		return nil
	}
	r.seen[d] = true
	if _, err := r.c.dst.HeadManifest(ctx, r.dstRepo, string(d)); err == nil {
		return nil
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	var m parsedManifest
	if err := json.Unmarshal(body, &m); err != nil {
		return fmt.Errorf("copy %s@%s: decode manifest: %w", r.srcRepo, d, err)
	}
	if mediaType == "" || isGenericType(mediaType) {
		mediaType = m.MediaType
	}
	for _, child := range m.Manifests {
		if err := r.graph(ctx, child.Digest, false); err != nil {
			return err
		}
	}
	var blobs []v1.Descriptor
	if m.Config != nil && m.Config.Digest != "" {
		blobs = append(blobs, *m.Config)
	}
	for _, l := range append(m.Layers, m.Blobs...) {
		if len(l.URLs) > 0 && (strings.Contains(l.MediaType, "foreign") || strings.Contains(l.MediaType, "nondistributable")) {
			continue // the destination fetches foreign layers from their URLs
		}
		blobs = append(blobs, l)
	}
	if err := r.copyBlobs(ctx, blobs); err != nil {
		return err
	}
	if _, err := r.c.dst.PutManifest(ctx, r.dstRepo, string(d), mediaType, body); err != nil {
		return err
	}
	r.stored[d] = true
	r.manifests++
	return nil
}

// copyBlobs copies blobs a few at a time.
func (r *copyRun) copyBlobs(ctx context.Context, blobs []v1.Descriptor) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.c.blobs)
	done := map[digest.Digest]bool{}
	for _, b := range blobs {
		if done[b.Digest] {
			continue
		}
		done[b.Digest] = true
		g.Go(func() error { return r.copyBlob(gctx, b) })
	}
	return g.Wait()
}

// copyBlob makes the blob b present in the destination repository.
func (r *copyRun) copyBlob(ctx context.Context, b v1.Descriptor) error {
	dst := r.c.dst
	if _, err := dst.HeadBlob(ctx, r.dstRepo, b.Digest); err == nil {
		r.c.remember(b.Digest, r.dstRepo)
		return nil
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	if from := r.c.mountFrom(b.Digest); from != "" && from != r.dstRepo {
		ok, err := dst.MountBlob(ctx, r.dstRepo, from, b.Digest)
		if err != nil {
			return err
		}
		if ok {
			r.mounted.Add(1)
			r.c.remember(b.Digest, r.dstRepo)
			return nil
		}
	}
	body, n, err := r.c.src.GetBlob(ctx, r.srcRepo, b.Digest)
	if err != nil {
		return err
	}
	defer body.Close()
	if n < 0 {
		n = b.Size
	}
	if err := dst.UploadBlob(ctx, r.dstRepo, b.Digest, n, body); err != nil {
		return err
	}
	r.uploaded.Add(1)
	r.bytes.Add(n)
	r.c.remember(b.Digest, r.dstRepo)
	return nil
}

// graph copies the manifest d with what it references and its
// referrers. A manifest the source does not have is skipped when optional,
// and so is a referrer the Copier's SkipReferrer refuses.
func (r *copyRun) graph(ctx context.Context, d digest.Digest, referrer bool) error {
	desc, body, err := r.c.src.GetManifest(ctx, r.srcRepo, string(d))
	if referrer && errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if referrer && r.c.skip != nil && r.c.skip(body) {
		return nil
	}
	if err := r.manifestTree(ctx, desc.Digest, desc.MediaType, body); err != nil {
		return err
	}
	return r.referrers(ctx, desc.Digest)
}

// referrers copies every referrer of d, recursively: those the referrers
// API lists, and cosign's tags with their tag.
func (r *copyRun) referrers(ctx context.Context, d digest.Digest) error {
	refs, err := r.c.src.Referrers(ctx, r.srcRepo, d)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	for _, ref := range refs {
		if r.seen[ref.Digest] {
			continue
		}
		// A referrer deleted since it was listed is skipped.
		if err := r.graph(ctx, ref.Digest, true); err != nil {
			return err
		}
	}
	for _, suffix := range cosignSuffixes {
		tag := d.Algorithm().String() + "-" + d.Encoded() + suffix
		desc, body, err := r.c.src.GetManifest(ctx, r.srcRepo, tag)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if r.c.skip != nil && r.c.skip(body) {
			continue
		}
		if err := r.manifestTree(ctx, desc.Digest, desc.MediaType, body); err != nil {
			return err
		}
		if have, err := r.c.dst.HeadManifest(ctx, r.dstRepo, tag); err == nil && have.Digest == desc.Digest {
			continue
		}
		if _, err := r.c.dst.PutManifest(ctx, r.dstRepo, tag, desc.MediaType, body); err != nil {
			return err
		}
		r.manifests++
	}
	return nil
}

func (c *Copier) remember(d digest.Digest, repo string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.mounts) >= maxMounts {
		clear(c.mounts)
	}
	c.mounts[d] = repo
}

func (c *Copier) mountFrom(d digest.Digest) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mounts[d]
}

// Permanent reports whether err is a refusal that sending the same
// content again will not change: the destination's policy denied it
// (ErrDenied), or it found the content invalid (400 with an OCI code such
// as MANIFEST_INVALID). Other failures (the remote down, a missing blob
// or credentials problem) are worth retrying.
func Permanent(err error) bool {
	if errors.Is(err, ErrDenied) {
		return true
	}
	var se *StatusError
	if errors.As(err, &se) && se.Status == 400 {
		switch se.Code {
		case "MANIFEST_INVALID", "MANIFEST_UNVERIFIED", "TAG_INVALID", "NAME_INVALID", "UNSUPPORTED", "SIZE_INVALID":
			return true
		}
	}
	return false
}

// Reason returns the destination's own words for a refusal: its OCI error
// code and message, or err's text.
func Reason(err error) string {
	var se *StatusError
	if errors.As(err, &se) && (se.Code != "" || se.Message != "") {
		if se.Message == "" {
			return se.Code
		}
		return se.Code + ": " + se.Message
	}
	return err.Error()
}
