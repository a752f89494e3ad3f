package scanner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/distribution/distribution/v3"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	pauth "github.com/portcullis/portcullis/auth"
	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/artifact"
)

// gatePolicy is a compiled scan.policies entry.
type gatePolicy struct {
	name    string
	repos   []pauth.Pattern
	mode    string
	gate    scan.GatePolicy
	timeout time.Duration
}

func compileGates(cfg config.Scan) ([]gatePolicy, error) {
	var out []gatePolicy
	for i, p := range cfg.Policies {
		g := gatePolicy{name: p.Name, mode: p.Mode, timeout: p.Timeout.D(), gate: scan.GatePolicy{
			MaxSeverity: p.MaxSeverity, UnknownSeverity: p.UnknownSeverity, IgnoreUnfixed: p.IgnoreUnfixed,
		}}
		for _, r := range p.Repositories {
			pat, err := pauth.ParsePattern(r)
			if err != nil {
				return nil, fmt.Errorf("scan.policies[%d].repositories: %w", i, err)
			}
			g.repos = append(g.repos, pat)
		}
		for j, a := range p.Allowlist {
			e := scan.AllowEntry{ID: a.ID, Package: a.Package, Reason: a.Reason}
			if a.Expires != "" {
				if err := e.Expires.UnmarshalText([]byte(a.Expires)); err != nil {
					return nil, fmt.Errorf("scan.policies[%d].allowlist[%d].expires: %w", i, j, err)
				}
			}
			g.gate.Allowlist = append(g.gate.Allowlist, e)
		}
		if err := g.gate.Validate(); err != nil {
			return nil, fmt.Errorf("scan.policies[%d]: %w", i, err)
		}
		out = append(out, g)
	}
	return out, nil
}

func (s *Service) gateFor(repo string) *gatePolicy {
	for i := range s.gates {
		for _, p := range s.gates[i].repos {
			if p.Match(repo) {
				return &s.gates[i]
			}
		}
	}
	return nil
}

// ScanMode returns the scan policy mode of repo, or "" when none applies.
func (s *Service) ScanMode(repo string) string {
	if g := s.gateFor(repo); g != nil {
		return g.mode
	}
	return ""
}

// CheckPush scans a manifest being tagged (its blobs are already stored)
// within the policy's timeout and evaluates the gate. It returns pass,
// and the reason for a refusal.
func (s *Service) CheckPush(ctx context.Context, repo string, d digest.Digest, manifest []byte, mediaType string) (bool, string, error) {
	g := s.gateFor(repo)
	if g == nil {
		return true, "", nil
	}
	db := s.database()
	if db == nil {
		return false, "no vulnerability database has been imported, so nothing can be scanned (registry vulndb import DIR)", nil
	}
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	r, err := s.open(ctx, repo)
	if err != nil {
		return false, "", err
	}
	img, ok, err := imageFromManifest(ctx, r, mediaType, manifest)
	if err != nil {
		if ctx.Err() != nil {
			return false, fmt.Sprintf("the scan did not finish within %v", g.timeout), nil
		}
		return false, "scan failed: " + err.Error(), nil
	}
	if !ok {
		return true, "", nil // an index or an artifact: its images are gated when tagged
	}
	stored, err := s.indexer.Inventory(ctx, img, d.String())
	if err != nil {
		if ctx.Err() != nil {
			return false, fmt.Sprintf("the scan did not finish within %v", g.timeout), nil
		}
		return false, "scan failed: " + err.Error(), nil
	}
	res := g.gate.Evaluate(stored.Report(db, s.policy), time.Now())
	return res.Pass, fmt.Sprintf("vulnerability policy %q: %s", g.name, res.Reason), nil
}

// CheckStored evaluates the newest stored report of repo@d. decided is
// false while the image has not been scanned yet.
func (s *Service) CheckStored(ctx context.Context, repo string, d digest.Digest) (pass, decided bool, reason string) {
	g := s.gateFor(repo)
	if g == nil {
		return true, true, ""
	}
	manifest, ok, err := s.latest(ctx, repo, d, artifact.ArtifactTypeReport)
	if err != nil || !ok {
		if reason := s.failure(repo, d); reason != "" {
			return false, true, reason
		}
		return false, false, "awaiting a vulnerability scan"
	}
	r, err := s.open(ctx, repo)
	if err != nil {
		return false, false, "awaiting a vulnerability scan"
	}
	blobs := r.Blobs(ctx)
	report, _, err := artifact.ReadReport(ctx, func(ctx context.Context, dg digest.Digest) (io.ReadCloser, error) {
		return blobs.Open(ctx, dg)
	}, manifest)
	if err != nil {
		return false, true, "scan report unreadable: " + err.Error()
	}
	res := g.gate.Evaluate(report, time.Now())
	return res.Pass, true, fmt.Sprintf("vulnerability policy %q: %s", g.name, res.Reason)
}

// latest returns the manifest of the newest referrer of repo@d with the
// given artifact type.
func (s *Service) latest(ctx context.Context, repo string, d digest.Digest, artifactType string) ([]byte, bool, error) {
	descs, err := s.refs.List(ctx, repo, d)
	if err != nil {
		return nil, false, err
	}
	var found []ocispec.Descriptor
	for _, desc := range descs {
		if desc.ArtifactType == artifactType {
			found = append(found, desc)
		}
	}
	if len(found) == 0 {
		return nil, false, nil
	}
	sort.Slice(found, func(i, j int) bool {
		return found[i].Annotations[ocispec.AnnotationCreated] > found[j].Annotations[ocispec.AnnotationCreated]
	})
	r, err := s.open(ctx, repo)
	if err != nil {
		return nil, false, err
	}
	ms, err := r.Manifests(ctx)
	if err != nil {
		return nil, false, err
	}
	m, err := ms.Get(ctx, found[0].Digest)
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
