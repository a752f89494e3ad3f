package scanner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/distribution/distribution/v3"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/artifact"
)

// Gates says which scan policy applies to a repository: the first whose
// repository patterns match it, or ok false when none does.
type Gates interface {
	For(repo string) (g *scan.RepoGate, ok bool)
}

// gateFor returns the scan policy of repo, or nil when none applies.
func (s *Service) gateFor(repo string) *scan.RepoGate { return s.Under(s.gates).gateFor(repo) }

// Policies are the scanner's checks under one set of scan policies: a
// request keeps the policies it started with while the configuration is
// reloaded. The Service's own methods use the policies it was given.
type Policies struct {
	s     *Service
	gates Gates
}

// Under returns the scanner's checks under gates (nil: no scan policy).
func (s *Service) Under(gates Gates) Policies { return Policies{s: s, gates: gates} }

// gateFor returns the scan policy of repo, or nil when none applies.
func (p Policies) gateFor(repo string) *scan.RepoGate {
	if p.gates == nil {
		return nil
	}
	if g, ok := p.gates.For(repo); ok {
		return g
	}
	return nil
}

// ScanMode is Policies.ScanMode under the service's own scan policies.
func (s *Service) ScanMode(repo string) policy.Mode { return s.Under(s.gates).ScanMode(repo) }

// ScanMode returns the scan policy mode of repo, or "" when none applies.
func (p Policies) ScanMode(repo string) policy.Mode {
	if g := p.gateFor(repo); g != nil {
		return policy.Mode(g.Mode)
	}
	return ""
}

// defaultPushTimeout bounds ScanPush in a repository without a scan policy.
const defaultPushTimeout = 60 * time.Second

// noDatabase is the reason nothing is scanned before a database is imported.
const noDatabase = "no vulnerability database has been imported, so nothing can be scanned (registry vulndb import DIR)"

// ScanPush is Policies.ScanPush under the service's own scan policies.
func (s *Service) ScanPush(ctx context.Context, repo string, d digest.Digest, manifest []byte, mediaType string) (scan.Outcome, error) {
	return s.Under(s.gates).ScanPush(ctx, repo, d, manifest, mediaType)
}

// ScanPush scans a manifest being tagged (its blobs are already stored)
// within the timeout of the repository's scan policy (60s without one),
// and judges the report by that policy. It returns an error only when the
// repository cannot be opened; a scan that fails or runs out of time is an
// scan.Outcome with scan.StatusFailed, and no database or a manifest that is not an
// image one with scan.StatusNotScanned.
func (p Policies) ScanPush(ctx context.Context, repo string, d digest.Digest, manifest []byte, mediaType string) (scan.Outcome, error) {
	s := p.s
	g := p.gateFor(repo)
	timeout := defaultPushTimeout
	if g != nil && g.Timeout > 0 {
		timeout = g.Timeout
	}
	db := s.database()
	if db == nil {
		return scan.Outcome{Status: scan.StatusNotScanned, Reason: noDatabase}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r, err := s.open(ctx, repo)
	if err != nil {
		return scan.Outcome{}, err
	}
	failed := func(err error) scan.Outcome {
		if ctx.Err() != nil {
			return scan.Outcome{Status: scan.StatusFailed, Reason: fmt.Sprintf("the scan did not finish within %v", timeout)}
		}
		if reason := transientReason(err); reason != "" {
			// The client and the webhooks get the reason; the log, the
			// cause (storage's own message, local paths).
			s.log.WarnContext(ctx, "scan at a tag push failed", "repo", repo, "digest", d, "err", err)
			return scan.Outcome{Status: scan.StatusFailed, Reason: reason}
		}
		return scan.Outcome{Status: scan.StatusFailed, Reason: "scan failed: " + err.Error()}
	}
	img, ok, err := imageFromManifest(ctx, r, mediaType, manifest)
	if err != nil {
		return failed(err), nil
	}
	if !ok {
		return notImage(mediaType, manifest), nil
	}
	stored, err := s.indexer.Inventory(ctx, img, d.String())
	if err != nil {
		return failed(err), nil
	}
	return judge(g, stored.Report(db, s.policy), s.now()), nil
}

// transientReason is what a client is told of a scan error that is no
// fault of the image, or "" for an error of the image's: never the error's
// text, which names storage objects and local paths.
func transientReason(err error) string {
	var se *storageError
	switch {
	case errors.As(err, &se):
		return "the registry could not read the image from storage; try again"
	case transient(err):
		return "the registry could not scan the image (a local disk or database error); try again"
	}
	return ""
}

// StoredOutcome is Policies.StoredOutcome under the service's own scan policies.
func (s *Service) StoredOutcome(ctx context.Context, repo string, d digest.Digest, manifest []byte, mediaType string) scan.Outcome {
	return s.Under(s.gates).StoredOutcome(ctx, repo, d, manifest, mediaType)
}

// StoredOutcome returns what is known of repo@d's scan without scanning:
// its newest stored report judged by the repository's scan policy, a
// recorded scan failure, not scanned (no database; not a container image)
// or pending. manifest and mediaType are repo@d's, which need not be
// stored yet (a tag push that uploads the manifest).
func (p Policies) StoredOutcome(ctx context.Context, repo string, d digest.Digest, manifest []byte, mediaType string) scan.Outcome {
	s := p.s
	if classify(mediaType, manifest) != kindImage {
		return notImage(mediaType, manifest)
	}
	report, reason, err := s.storedVerdict(ctx, repo, d)
	var unreadable *unreadableReportError
	switch {
	case errors.As(err, &unreadable):
		return scan.Outcome{Status: scan.StatusFailed, Reason: unreadable.Error()}
	case err != nil:
		s.log.WarnContext(ctx, "read scan report", "repo", repo, "digest", d, "err", err)
		return scan.Outcome{Status: scan.StatusPending, Reason: "the stored scan report could not be read"}
	case report != nil:
		return judge(p.gateFor(repo), report, s.now())
	case reason != "":
		return scan.Outcome{Status: scan.StatusFailed, Reason: reason}
	}
	if s.database() == nil {
		return scan.Outcome{Status: scan.StatusNotScanned, Reason: noDatabase}
	}
	if s.claims.scanning(repo, d) {
		return scan.Outcome{Status: scan.StatusPending, Reason: "the image is being scanned"}
	}
	return scan.Outcome{Status: scan.StatusPending, Reason: "awaiting a vulnerability scan: the image is scanned once it is stored"}
}

// notImage is the outcome of a manifest that is not a container image.
func notImage(mediaType string, manifest []byte) scan.Outcome {
	reason := "not a container image: artifacts are not scanned"
	if classify(mediaType, manifest) == kindIndex {
		reason = "an index: each of its images is scanned on its own"
	}
	return scan.Outcome{Status: scan.StatusNotScanned, Reason: reason, Exempt: true}
}

// judge is the outcome of a report under policy g (nil: none) at now.
func judge(g *scan.RepoGate, report *scan.Report, now time.Time) scan.Outcome {
	o := scan.Outcome{Status: scan.StatusScanned, Report: report}
	if g != nil {
		o.Gate = g.Judge(report, now)
	}
	return o
}

// CheckStored is Policies.CheckStored under the service's own scan policies.
func (s *Service) CheckStored(ctx context.Context, repo string, d digest.Digest) (pass, decided bool, reason string) {
	return s.Under(s.gates).CheckStored(ctx, repo, d)
}

// CheckStored evaluates the newest stored report of repo@d. decided is
// false while the image has not been scanned yet.
func (p Policies) CheckStored(ctx context.Context, repo string, d digest.Digest) (pass, decided bool, reason string) {
	s := p.s
	g := p.gateFor(repo)
	if g == nil {
		return true, true, ""
	}
	report, reason, err := s.storedVerdict(ctx, repo, d)
	var unreadable *unreadableReportError
	switch {
	case errors.As(err, &unreadable):
		return false, true, unreadable.Error()
	case err == nil && reason != "":
		return false, true, reason
	case err != nil || report == nil:
		if reason := s.store.failure(repo, d); reason != "" {
			return false, true, reason
		}
		return false, false, "awaiting a vulnerability scan"
	}
	res := g.Gate.Evaluate(report, s.now())
	return res.Pass, true, fmt.Sprintf("vulnerability policy %q: %s", g.Name, res.Reason)
}

// unreadableReportError is a stored report that cannot be decoded.
type unreadableReportError struct{ err error }

func (e *unreadableReportError) Error() string { return "scan report unreadable: " + e.err.Error() }
func (e *unreadableReportError) Unwrap() error { return e.err }

// storedVerdict reads the newest stored verdict of repo@d: its newest
// report, or the reason of its scan failure when a failure artifact is
// newer than any report (or, with neither in storage, when the metadata
// database recorded one). Both are empty when it has none. A report that
// cannot be decoded is an *unreadableReportError, any other error a
// failure to read storage.
func (s *Service) storedVerdict(ctx context.Context, repo string, d digest.Digest) (report *scan.Report, failure string, err error) {
	descs, err := s.refs.List(ctx, repo, d)
	if err != nil {
		return nil, "", err
	}
	desc, ok := newest(descs, artifact.ArtifactTypeReport)
	if fail, failed := newestFailure(descs, desc, ok); failed {
		if reason := s.store.failure(repo, d); reason != "" {
			return nil, reason, nil
		}
		reason, err := s.readFailure(ctx, repo, d, fail)
		if err != nil || reason != "" {
			return nil, reason, err
		}
	}
	if !ok {
		return nil, s.store.failure(repo, d), nil
	}
	r, err := s.open(ctx, repo)
	if err != nil {
		return nil, "", err
	}
	_, manifest, found, err := readManifest(ctx, r, desc.Digest)
	if err != nil || !found {
		return nil, "", err
	}
	blobs := r.Blobs(ctx)
	report, _, err = artifact.ReadReport(ctx, func(ctx context.Context, dg digest.Digest) (io.ReadCloser, error) {
		return blobs.Open(ctx, dg)
	}, manifest)
	if err != nil {
		return nil, "", &unreadableReportError{err}
	}
	return report, "", nil
}

// latest returns the manifest of the newest referrer of repo@d with the
// given artifact type, as newest picks it.
func (s *Service) latest(ctx context.Context, repo string, d digest.Digest, artifactType string) ([]byte, bool, error) {
	descs, err := s.refs.List(ctx, repo, d)
	if err != nil {
		return nil, false, err
	}
	desc, ok := newest(descs, artifactType)
	if !ok {
		return nil, false, nil
	}
	r, err := s.open(ctx, repo)
	if err != nil {
		return nil, false, err
	}
	ms, err := r.Manifests(ctx)
	if err != nil {
		return nil, false, err
	}
	m, err := ms.Get(ctx, desc.Digest)
	if err != nil {
		return nil, false, err
	}
	_, payload, err := m.Payload()
	return payload, err == nil, err
}

// imageFromManifest reads a manifest (stored or being stored) of repo as
// an image, or returns ok false when it is not a container image (an
// index, or an artifact). A failure to read storage is a storageError.
func imageFromManifest(ctx context.Context, repo distribution.Repository, mt string, payload []byte) (v1.Image, bool, error) {
	parsed, err := v1.ParseManifest(bytes.NewReader(payload))
	if err != nil {
		return nil, false, err
	}
	if parsed.MediaType != "" {
		mt = string(parsed.MediaType)
	}
	if mt != string(types.OCIManifestSchema1) && mt != string(types.DockerManifestSchema2) {
		return nil, false, nil
	}
	if cmt := parsed.Config.MediaType; cmt != types.OCIConfigJSON && cmt != types.DockerConfigJSON {
		return nil, false, nil
	}
	blobs := repo.Blobs(ctx)
	cfg, err := blobs.Get(ctx, digest.Digest(parsed.Config.Digest.String()))
	if errors.Is(err, distribution.ErrBlobUnknown) {
		return nil, false, errors.Join(errors.New("the image's config is not in the repository"), err)
	}
	if err != nil {
		return nil, false, &storageError{fmt.Errorf("get config: %w", err)}
	}
	img, err := partial.CompressedToImage(&storedImage{ctx: ctx, blobs: blobs, mediaType: mt, manifest: payload, config: cfg})
	if err != nil {
		return nil, false, err
	}
	// The layers are read as stored: decompress them ahead of the reader.
	return scan.StoredLayers(img), true, nil
}
