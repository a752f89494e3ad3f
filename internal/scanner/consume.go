package scanner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/artifact"
)

// errNoDB is returned for work that needs a vulnerability database before
// one is loaded; the outbox keeps the entry until one is.
var errNoDB = fmt.Errorf("no vulnerability database has been imported: %w", outbox.ErrNotReady)

// failedError is a scan that failed because of the image itself (a corrupt
// layer, a hostile tar): its verdict "scan failed" is recorded, and it is
// not retried.
type failedError struct{ err error }

func (e *failedError) Error() string { return e.err.Error() }
func (e *failedError) Unwrap() error { return e.err }

// storageError is a failure to read the storage backend: not the image's
// fault, so the scan is retried.
type storageError struct{ err error }

func (e *storageError) Error() string { return "read storage: " + e.err.Error() }
func (e *storageError) Unwrap() error { return e.err }

// localError is a failure of the node itself, such as its metadata
// database (which holds the layer cache) or its disk: not the image's
// fault, so the scan is retried.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

// errInternal is the recorded reason of a scan that panicked: a bug, most
// likely in a parser, that the image triggers, and would trigger again.
var errInternal = errors.New("internal error while reading the image")

// defaultScanTimeout is the least time a scan from the outbox is given: a
// policy's timeout is meant for a client waiting at an enforce tag push,
// and a large image scanned in the background may need longer.
const defaultScanTimeout = 10 * time.Minute

// handle is the scan outbox's consumer. A pushed image is scanned unless
// it already has a verdict, a pushed index queues its unscanned images, a
// deleted manifest is forgotten. It returns nil once the entry is done
// (scanned, or "scan failed" recorded), an error wrapping
// outbox.ErrNotReady before a database is loaded, and another error for a
// transient failure, to be retried. Once an entry is done, the reconcile
// pass may queue its image again.
func (s *Service) handle(ctx context.Context, e outbox.Entry) (err error) {
	ev := e.Event
	defer func() {
		if err == nil {
			s.recon.setQueued(ev.Repository, ev.Digest, false)
		}
	}()
	switch {
	// A manifest with a subject is not skipped here: what it is (an
	// artifact, or an image carrying a subject) is classify's to say.
	case ev.Repository == "" || ev.Digest == "" || ev.Repository == DBRepository:
		return nil // unreadable, by tag only, or the database: nothing to scan
	case ev.Kind == outbox.KindDelete:
		return s.store.forget(ev.Repository, ev.Digest)
	case ev.Tag != "" && referrerTag(ev.Tag):
		return nil
	case s.database() == nil:
		return errNoDB
	}
	release, err := s.claim(ctx, ev.Repository, ev.Digest)
	if err != nil {
		return err
	}
	defer release()
	done, err := s.hasVerdict(ctx, ev.Repository, ev.Digest)
	if err != nil || done {
		return err
	}
	timeout := s.scanTimeout(ev.Repository)
	if s.replicas != nil {
		// Another replica may be scanning it (its reconcile pass, or a
		// retry of an entry of its own), or may just have stored its
		// report.
		unclaim, held, err := s.replicas.acquire(ctx, ev.Repository, ev.Digest, timeout+claimMargin)
		if err != nil {
			return &storageError{err}
		}
		if !held {
			return errScannedElsewhere
		}
		defer unclaim()
		if done, err := s.hasVerdict(ctx, ev.Repository, ev.Digest); err != nil || done {
			return err
		}
	}
	r, err := s.open(ctx, ev.Repository)
	if err != nil {
		return err
	}
	mt, payload, found, err := readManifest(ctx, r, ev.Digest)
	if err != nil || !found {
		return err // gone since: nothing to scan
	}
	switch classify(mt, payload) {
	case kindIndex:
		n, err := s.expandIndex(ctx, ev.Repository, payload)
		if n > 0 {
			s.log.InfoContext(ctx, "index queued its images for a scan", "repo", ev.Repository, "digest", ev.Digest, "images", n)
		}
		return err
	case kindImage:
	default:
		return nil // an artifact
	}
	errc := make(chan error, 1)
	job := func(ctx context.Context) { errc <- s.runScan(ctx, r, ev.Repository, ev.Digest, mt, payload, timeout) }
	if err := s.pool.Do(ctx, job); err != nil {
		return fmt.Errorf("queue scan: %w", err)
	}
	err = <-errc
	if fe := (*failedError)(nil); errors.As(err, &fe) {
		s.log.WarnContext(ctx, "scan failed", "repo", ev.Repository, "digest", ev.Digest, "err", err)
		return nil
	}
	return err
}

// claim makes sure one image is scanned (or restored) once at a time:
// when another scan of repo@d runs, it waits for it. release must be
// called.
func (s *Service) claim(ctx context.Context, repo string, d digest.Digest) (release func(), err error) {
	for {
		release, busy := s.claims.tryClaim(repo, d)
		if busy == nil {
			return release, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-busy:
		}
	}
}

// hasVerdict reports whether repo@d has a verdict: remembered in the
// metadata database, recorded as "scan failed" (in the metadata database,
// or a failure artifact in storage newer than any report, which the
// metadata database then caches), or with a report and an inventory among
// its referrers in storage. In the last case (the metadata
// database was lost, or another replica scanned the image) the inventory
// is read back and re-matched against the loaded database, and the image
// remembered (restore): no layer is read. An image with a report but no
// usable inventory (scanned before inventories were stored) has no
// verdict, so that it is scanned once more and gets one.
func (s *Service) hasVerdict(ctx context.Context, repo string, d digest.Digest) (bool, error) {
	if s.store.remembered(repo, d) || s.store.failure(repo, d) != "" {
		return true, nil
	}
	descs, err := s.refs.List(ctx, repo, d)
	if err != nil {
		return false, fmt.Errorf("list referrers of %s@%s: %w", repo, d, err)
	}
	report, ok := newest(descs, artifact.ArtifactTypeReport)
	if fail, failed := newestFailure(descs, report, ok); failed {
		reason, err := s.readFailure(ctx, repo, d, fail)
		return reason != "", err
	}
	if !ok {
		return false, nil
	}
	inv, ok := newest(descs, artifact.ArtifactTypeInventory)
	if !ok {
		s.log.InfoContext(ctx, "scanned image without a stored inventory: scanning it again", "repo", repo, "digest", d)
		return false, nil
	}
	return s.restore(ctx, repo, d, report, inv)
}

// readManifest returns manifest d of repo; found is false when it is not
// (or no longer) there.
func readManifest(ctx context.Context, r distribution.Repository, d digest.Digest) (mt string, payload []byte, found bool, err error) {
	ms, err := r.Manifests(ctx)
	if err != nil {
		return "", nil, false, err
	}
	m, err := ms.Get(ctx, d)
	var unknownRev distribution.ErrManifestUnknownRevision
	var unknown distribution.ErrManifestUnknown
	var repoUnknown distribution.ErrRepositoryUnknown
	if errors.As(err, &unknownRev) || errors.As(err, &unknown) || errors.As(err, &repoUnknown) {
		return "", nil, false, nil
	}
	if err != nil {
		return "", nil, false, &storageError{fmt.Errorf("get manifest %s: %w", d, err)}
	}
	mt, payload, err = m.Payload()
	if err != nil {
		return "", nil, false, err
	}
	return mt, payload, true, nil
}

type manifestKind = scan.ManifestKind

const (
	kindOther = scan.KindOther
	kindImage = scan.KindImage
	kindIndex = scan.KindIndex
)

// classify tells a container image from an index and from anything else.
func classify(mt string, payload []byte) manifestKind { return scan.Classify(mt, payload) }

// expandIndex queues the images (and nested indexes) of an index that
// have no verdict yet, and returns how many it queued. Attestation
// manifests are no images.
func (s *Service) expandIndex(ctx context.Context, repo string, payload []byte) (int, error) {
	var idx v1.Index
	if err := json.Unmarshal(payload, &idx); err != nil {
		return 0, nil // distribution accepted it; nothing we can scan
	}
	queued := 0
	for _, m := range idx.Manifests {
		if m.Annotations["vnd.docker.reference.type"] == "attestation-manifest" {
			continue
		}
		switch types.MediaType(m.MediaType) {
		case types.OCIManifestSchema1, types.DockerManifestSchema2, types.OCIImageIndex, types.DockerManifestList:
		default:
			continue
		}
		release, busy := s.claims.tryClaim(repo, m.Digest)
		if busy != nil {
			continue // pushed with the index, and being scanned from its own entry
		}
		done, err := s.hasVerdict(ctx, repo, m.Digest)
		release()
		if err != nil {
			return queued, err
		}
		if done {
			continue
		}
		if _, err := s.box.Append(ctx, outbox.Event{
			Kind: outbox.KindPush, Repository: repo, Digest: m.Digest, MediaType: m.MediaType, Time: s.now(),
		}); err != nil {
			return queued, err
		}
		queued++
	}
	return queued, nil
}

// referrerTagPattern is the tag scheme of referrers stored without the
// referrers API (cosign's sha256-<hex>.sig, .att, .sbom; the OCI fallback
// index sha256-<hex>).
var referrerTagPattern = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^sha(256|512)-[0-9a-f]{64,128}(\.[a-z0-9]+)?$`) })

func referrerTag(tag string) bool {
	return strings.HasPrefix(tag, "sha") && referrerTagPattern().MatchString(tag)
}

// scanTimeout is the time limit of a background scan of an image of repo:
// its scan policy's timeout when that is longer than the least time given
// to any background scan (s.minScanTimeout, defaultScanTimeout).
func (s *Service) scanTimeout(repo string) time.Duration {
	if g := s.gateFor(repo); g != nil && g.Timeout > s.minScanTimeout {
		return g.Timeout
	}
	return s.minScanTimeout
}

// runScan is the scan job of image manifest repo@d: scanImage within
// timeout. A scan that runs out of time, or that panics, gets the verdict
// "scan failed" (a failedError): the image would do the same again. A
// transient failure is returned as is, to be retried.
func (s *Service) runScan(ctx context.Context, r distribution.Repository, repo string, d digest.Digest, mt string, payload []byte, timeout time.Duration) (err error) {
	scanCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	subject := subjectOf(d, mt, payload)
	defer func() {
		if v := recover(); v != nil {
			s.log.ErrorContext(ctx, "scan panicked", "repo", repo, "digest", d, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			err = s.failed(ctx, r, repo, subject, errInternal)
		}
	}()
	err = s.scanImage(scanCtx, r, repo, d, mt, payload)
	if fe := (*failedError)(nil); err == nil || errors.As(err, &fe) {
		return err
	}
	if ctx.Err() == nil && errors.Is(scanCtx.Err(), context.DeadlineExceeded) {
		return s.failed(ctx, r, repo, subject, fmt.Errorf("took longer than %v", timeout))
	}
	return err
}

// scanImage scans image manifest repo@d and stores its inventory, SBOM
// and report as referrers, the report last: a report in storage means the
// image was scanned and its inventory is there to re-match. It returns a
// failedError (the verdict "scan failed" recorded) when the image itself
// is at fault, and another error for a transient failure.
func (s *Service) scanImage(ctx context.Context, r distribution.Repository, repo string, d digest.Digest, mt string, payload []byte) error {
	if s.database() == nil {
		return errNoDB
	}
	start := s.now()
	img, ok, err := imageFromManifest(ctx, r, mt, payload)
	if err != nil {
		return s.failed(ctx, r, repo, subjectOf(d, mt, payload), err)
	}
	if !ok {
		return nil // an artifact
	}
	stored, err := s.indexer.Inventory(ctx, img, d.String())
	if err != nil {
		return s.failed(ctx, r, repo, subjectOf(d, mt, payload), fmt.Errorf("inventory: %w", err))
	}
	imt, _ := img.MediaType()
	size, _ := img.Size()
	subject := v1.Descriptor{MediaType: string(imt), Digest: d, Size: size}
	now := s.now()
	invArt, err := artifact.InventoryArtifact(subject, stored, now)
	if err != nil {
		return err
	}
	sbom, err := artifact.SBOM(stored, now)
	if err != nil {
		return err
	}
	sbomArt, err := artifact.SBOMArtifact(subject, sbom, now)
	if err != nil {
		return err
	}
	for _, a := range []*artifact.Artifact{invArt, sbomArt} {
		if err := push(ctx, r, a, ""); err != nil {
			return fmt.Errorf("store %s: %w", a.Descriptor.ArtifactType, err)
		}
	}
	// Matched with the current database, so that a database loaded
	// meanwhile re-matches this image once it is remembered.
	s.rematchMu.Lock()
	defer s.rematchMu.Unlock()
	report := s.matching().Report(stored, s.policy)
	judged := s.judgeStored(repo, report)
	reportArt, err := artifact.ReportArtifact(subject, report, now)
	if err != nil {
		return err
	}
	if err := push(ctx, r, reportArt, ""); err != nil {
		return fmt.Errorf("store %s: %w", reportArt.Descriptor.ArtifactType, err)
	}
	e := scanned{Subject: subject, Inventory: stored, Report: report, Created: now}
	if err := s.store.remember(repo, e, invArt.Descriptor.Digest, sbomArt.Descriptor.Digest, reportArt.Descriptor.Digest); err != nil {
		s.log.WarnContext(ctx, "remember scanned image", "repo", repo, "digest", d, "err", err)
	}
	s.scans.WithLabelValues("ok").Inc()
	s.duration.Observe(s.now().Sub(start).Seconds())
	s.notePolicy(ctx, repo, d, judged)
	for _, f := range report.Findings {
		s.findings.WithLabelValues(strings.ToLower(string(f.Severity.Level))).Inc()
	}
	return nil
}

// failed turns a scan error into the verdict "scan failed" unless it is
// transient, which is returned as is to be retried.
func (s *Service) failed(ctx context.Context, r distribution.Repository, repo string, subject v1.Descriptor, err error) error {
	if ctx.Err() != nil || transient(err) {
		return err
	}
	if rerr := s.recordFailure(ctx, r, repo, subject, err); rerr != nil {
		return errors.Join(err, rerr)
	}
	s.scans.WithLabelValues("failed").Inc()
	return &failedError{err}
}

// subjectOf is the descriptor of manifest payload, digest d, of media type
// mt unless the manifest names its own.
func subjectOf(d digest.Digest, mt string, payload []byte) v1.Descriptor {
	var m struct {
		MediaType string `json:"mediaType"`
	}
	if json.Unmarshal(payload, &m) == nil && m.MediaType != "" {
		mt = m.MediaType
	}
	return v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(payload))}
}

// transient reports whether a scan error is no fault of the image, so that
// the scan is retried: storage could not be read (storageError), the node
// failed (localError, or a *fs.PathError: the only files a scan opens are
// its temporary files, so that is a full or broken local disk), or the scan
// was cancelled.
func transient(err error) bool {
	var se *storageError
	var le *localError
	var pe *fs.PathError
	return errors.As(err, &se) || errors.As(err, &le) || errors.As(err, &pe) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
