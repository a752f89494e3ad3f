package scanner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/artifact"
)

// createdAfter returns now, or the first second after prev when now is
// not later at the second resolution of the created annotation, so that
// a new report is the newest.
func createdAfter(prev, now time.Time) time.Time {
	if next := prev.Truncate(time.Second).Add(time.Second); now.Before(next) {
		return next
	}
	return now
}

// rematchAll re-matches every remembered image against the current
// database and stores a new report for those whose findings or verdict
// changed. Layers are not read.
func (s *Service) rematchAll(ctx context.Context) error {
	s.rematchMu.Lock()
	defer s.rematchMu.Unlock()
	matcher := s.matching()
	if matcher == nil {
		return nil
	}
	items, err := s.store.scannedImages()
	if err != nil {
		return err
	}
	changed := 0
	for _, it := range items {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if it.e.Report != nil && it.e.Report.DB.Digest == matcher.DB().Digest {
			continue // matched with this database already (restored since it loaded)
		}
		prev, prevCreated := it.e.Report, it.e.Created
		release := func() {}
		if s.replicas != nil {
			var latest storedReport
			var found bool
			if release, latest, found, err = s.claimForRematch(ctx, it.repo, it.e.Subject.Digest); err != nil {
				return err
			}
			if found && latest.report.DB.Digest == matcher.DB().Digest {
				// Another replica re-matched it with this database.
				it.e.Report, it.e.Created = latest.report, latest.created
				err := s.store.remember(it.repo, it.e, latest.digest)
				release()
				if err != nil {
					return err
				}
				continue
			}
			if found {
				prev, prevCreated = latest.report, latest.created
			}
		}
		report, change := matcher.Rematch(it.e.Inventory, prev, s.policy)
		judged := s.judgeStored(it.repo, report)
		change.Verdict = change.Verdict || policyChanged(prev, report)
		if !change.Changed() {
			release()
			continue
		}
		r, err := s.open(ctx, it.repo)
		if err != nil {
			release()
			return err
		}
		stored, created, err := s.storeRematch(ctx, r, it.repo, it.e.Subject, report, change, prevCreated)
		release()
		if err != nil {
			return err
		}
		s.notePolicy(ctx, it.repo, it.e.Subject.Digest, judged)
		it.e.Report, it.e.Created = report, created
		if err := s.store.remember(it.repo, it.e, stored); err != nil {
			return err
		}
		changed++
	}
	s.log.InfoContext(ctx, "re-matched scanned images", "images", len(items), "changed", changed)
	return nil
}

// restore reads back the stored inventory of repo@d, an image with a
// report in storage that the metadata database does not know (it was
// lost, or another replica scanned the image): it re-matches the
// inventory against the loaded database, stores a new report when the
// findings or the verdict changed, and remembers the image, so that the
// next database re-matches it too. No layer is read. It returns false
// when the inventory is unusable (gone, another format, malformed), so
// the image is scanned again, and an error when storage cannot be read.
func (s *Service) restore(ctx context.Context, repo string, d digest.Digest, reportDesc, invDesc v1.Descriptor) (bool, error) {
	r, err := s.open(ctx, repo)
	if err != nil {
		return false, err
	}
	blobs := r.Blobs(ctx)
	fetch := func(ctx context.Context, dg digest.Digest) (io.ReadCloser, error) { return blobs.Open(ctx, dg) }
	_, payload, found, err := readManifest(ctx, r, invDesc.Digest)
	if err != nil || !found {
		return false, err
	}
	stored, m, err := artifact.ReadInventory(ctx, fetch, payload)
	if err == nil && (m.Subject == nil || m.Subject.Digest != d) {
		err = fmt.Errorf("%w: inventory of another subject", artifact.ErrInvalidArtifact)
	}
	if err != nil {
		if unusable(err) {
			s.log.InfoContext(ctx, "stored inventory unusable: the image is scanned again", "repo", repo, "digest", d, "err", err)
			return false, nil
		}
		return false, &storageError{fmt.Errorf("read inventory %s: %w", invDesc.Digest, err)}
	}
	subject := v1.Descriptor{MediaType: m.Subject.MediaType, Digest: m.Subject.Digest, Size: m.Subject.Size}
	var prev *scan.Report
	_, payload, found, err = readManifest(ctx, r, reportDesc.Digest)
	if err != nil {
		return false, err
	}
	if found {
		prev, _, err = artifact.ReadReport(ctx, fetch, payload)
		if err != nil && !unusable(err) {
			return false, &storageError{fmt.Errorf("read report %s: %w", reportDesc.Digest, err)}
		}
	}
	prevCreated, _ := time.Parse(time.RFC3339, reportDesc.Annotations[v1.AnnotationCreated])

	s.rematchMu.Lock()
	defer s.rematchMu.Unlock()
	e := scanned{Subject: subject, Inventory: stored, Report: prev, Created: prevCreated}
	referrers := []digest.Digest{invDesc.Digest, reportDesc.Digest}
	changed := false
	matcher := s.matching()
	if matcher != nil && (prev == nil || prev.DB.Digest != matcher.DB().Digest) && s.replicas != nil {
		// Another replica may be re-matching it, or just have stored the
		// report of this database.
		release, latest, found, err := s.claimForRematch(ctx, repo, d)
		if err != nil {
			return false, err
		}
		defer release()
		if found && latest.digest != reportDesc.Digest {
			prev, prevCreated = latest.report, latest.created
			e.Report, e.Created = prev, prevCreated
			referrers = append(referrers, latest.digest)
		}
	}
	if matcher != nil && (prev == nil || prev.DB.Digest != matcher.DB().Digest) {
		report, change := matcher.Rematch(stored, prev, s.policy)
		judged := s.judgeStored(repo, report)
		change.Verdict = change.Verdict || policyChanged(prev, report)
		if changed = change.Changed(); changed {
			reportDigest, created, err := s.storeRematch(ctx, r, repo, subject, report, change, prevCreated)
			if err != nil {
				return false, err
			}
			s.notePolicy(ctx, repo, d, judged)
			e.Report, e.Created = report, created
			referrers = append(referrers, reportDigest)
		}
	}
	if err := s.store.remember(repo, e, referrers...); err != nil {
		return false, err
	}
	s.restored.Inc()
	s.log.InfoContext(ctx, "scanned image restored from its stored inventory", "repo", repo, "digest", d, "changed", changed)
	return true, nil
}

// unusable reports whether err is the content's fault (a missing blob, a
// malformed or stale document) rather than storage's.
func unusable(err error) bool {
	for _, target := range []error{
		artifact.ErrInvalidArtifact, artifact.ErrBlobMismatch, artifact.ErrTooLarge,
		scan.ErrStaleInventory, scan.ErrMalformedInventory, distribution.ErrBlobUnknown,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// newest returns the descriptor of the newest of the scanner's referrers in
// descs of the given artifact type, by its created annotation; ok is false
// when there is none. The front handler refuses the reserved types
// (artifact.Reserved) and annotations (artifact.ReservedAnnotation) from
// clients, so what carries them was written by the scanner: a client's
// CycloneDX SBOM, of the same artifact type, lacks the annotation.
func newest(descs []v1.Descriptor, artifactType string) (d v1.Descriptor, ok bool) {
	for _, desc := range descs {
		// The scanner's own carry a reserved annotation, which clients may not
		// push: a client's CycloneDX SBOM is not taken for the registry's.
		_, counted := desc.Annotations[artifact.AnnotationPackages]
		_, status := desc.Annotations[artifact.AnnotationStatus]
		if ours := counted || status; desc.ArtifactType != artifactType || !ours {
			continue
		}
		if !ok || desc.Annotations[v1.AnnotationCreated] > d.Annotations[v1.AnnotationCreated] {
			d, ok = desc, true
		}
	}
	return d, ok
}

// recordFailure stores the verdict "scan failed" of repo@subject and its
// reason as a failure artifact, a referrer of the image next to its
// reports (storage holds the verdict), then caches the reason in the
// metadata database.
func (s *Service) recordFailure(ctx context.Context, r distribution.Repository, repo string, subject v1.Descriptor, cause error) error {
	reason := cause.Error()
	if !strings.HasPrefix(reason, "scan failed") {
		reason = "scan failed: " + reason
	}
	a, err := artifact.FailureArtifact(subject, reason, s.now())
	if err != nil {
		return err
	}
	if err := push(ctx, r, a, ""); err != nil {
		return fmt.Errorf("store the scan failure of %s@%s: %w", repo, subject.Digest, err)
	}
	return s.store.cacheFailure(repo, subject.Digest, reason, a.Descriptor.Digest)
}

// newestFailure returns the newest failure artifact among descs when it
// is newer than report (the newest report, when hasReport): the newest
// verdict wins, and a report of the same second does.
func newestFailure(descs []v1.Descriptor, report v1.Descriptor, hasReport bool) (v1.Descriptor, bool) {
	fail, ok := newest(descs, artifact.ArtifactTypeFailure)
	if !ok || (hasReport && fail.Annotations[v1.AnnotationCreated] <= report.Annotations[v1.AnnotationCreated]) {
		return v1.Descriptor{}, false
	}
	return fail, true
}

// readFailure reads failure artifact desc of repo@d and caches its reason
// in the metadata database. An unreadable artifact is no verdict ("").
func (s *Service) readFailure(ctx context.Context, repo string, d digest.Digest, desc v1.Descriptor) (string, error) {
	r, err := s.open(ctx, repo)
	if err != nil {
		return "", err
	}
	_, payload, found, err := readManifest(ctx, r, desc.Digest)
	if err != nil || !found {
		return "", err
	}
	blobs := r.Blobs(ctx)
	f, m, err := artifact.ReadFailure(ctx, func(ctx context.Context, dg digest.Digest) (io.ReadCloser, error) {
		return blobs.Open(ctx, dg)
	}, payload)
	if err == nil && (m.Subject == nil || m.Subject.Digest != d) {
		err = fmt.Errorf("%w: failure of another subject", artifact.ErrInvalidArtifact)
	}
	if err != nil {
		if unusable(err) {
			s.log.InfoContext(ctx, "stored scan failure unusable", "repo", repo, "digest", d, "err", err)
			return "", nil
		}
		return "", &storageError{fmt.Errorf("read scan failure %s: %w", desc.Digest, err)}
	}
	if err := s.store.cacheFailure(repo, d, f.Reason, desc.Digest); err != nil {
		s.log.WarnContext(ctx, "cache scan failure", "repo", repo, "digest", d, "err", err)
	}
	return f.Reason, nil
}

// storeRematch stores the re-matched report of repo@subject (created after
// the previous one, so that it sorts as the newest) and logs the change: the
// event a changed verdict or finding list emits. It returns the report
// artifact's digest and its creation time.
func (s *Service) storeRematch(ctx context.Context, r distribution.Repository, repo string, subject v1.Descriptor, report *scan.Report, change scan.Change, prevCreated time.Time) (digest.Digest, time.Time, error) {
	created := createdAfter(prevCreated, s.now())
	a, err := artifact.ReportArtifact(subject, report, created)
	if err != nil {
		return "", time.Time{}, err
	}
	if err := push(ctx, r, a, ""); err != nil {
		return "", time.Time{}, fmt.Errorf("store report of %s@%s: %w", repo, subject.Digest, err)
	}
	s.rematches.Inc()
	s.log.InfoContext(ctx, "vulnerability report changed", "repo", repo, "digest", subject.Digest,
		"db", report.DB.Digest, "added", len(change.Added), "removed", len(change.Removed),
		"verdictChanged", change.Verdict, "policyPassed", report.RepositoryPolicy == nil || report.RepositoryPolicy.Passed, "coverageChanged", change.Coverage)
	return a.Descriptor.Digest, created, nil
}
