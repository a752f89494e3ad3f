package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/digests"
	"github.com/portcullis/portcullis/internal/gc"
	"github.com/portcullis/portcullis/internal/referrers"
	"github.com/portcullis/portcullis/internal/scanner"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/artifact"
)

// indexedRepos opens repositories through the same middleware distribution
// uses (sha512 aliases, the referrers index), for content the registry
// writes itself.
type indexedRepos struct {
	ns    distribution.Namespace
	idx   *referrers.Index
	links *digests.Links
	// marks makes the registry's own writes vouch while garbage
	// collection runs; nil outside a serving registry.
	marks *gc.Marks
}

func (r indexedRepos) Repository(ctx context.Context, name reference.Named) (distribution.Repository, error) {
	repo, err := r.ns.Repository(ctx, name)
	if err != nil {
		return nil, err
	}
	return r.marks.Wrap(name.Name(), referrers.Wrap(digests.Wrap(repo, r.links), r.idx)), nil
}

// Enumerate calls ingester with each repository's name, for the
// scanner's reconcile pass.
func (r indexedRepos) Enumerate(ctx context.Context, ingester func(string) error) error {
	en, ok := r.ns.(distribution.RepositoryEnumerator)
	if !ok {
		return errors.New("the storage namespace cannot list repositories")
	}
	err := en.Enumerate(ctx, ingester)
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return nil // nothing pushed yet
	}
	return err
}

func newIndexedRepos(ctx context.Context, driver storagedriver.StorageDriver) (indexedRepos, error) {
	ns, err := storage.NewRegistry(ctx, driver, storage.EnableDelete)
	if err != nil {
		return indexedRepos{}, err
	}
	idx, err := referrers.NewIndex(driver)
	if err != nil {
		return indexedRepos{}, err
	}
	links, err := digests.NewLinks(driver)
	if err != nil {
		return indexedRepos{}, err
	}
	return indexedRepos{ns: ns, idx: idx, links: links}, nil
}

// ImportVulnDB stores the OSV bundle in dir as the registry's vulnerability
// database (portcullis/vulndb:latest) in the configured storage. Running
// registries load it within seconds.
func ImportVulnDB(ctx context.Context, cfg *config.Config, dir string) (digest.Digest, *artifact.DBConfig, error) {
	driver, err := newDriver(ctx, cfg)
	if err != nil {
		return "", nil, err
	}
	repos, err := newIndexedRepos(ctx, driver)
	if err != nil {
		return "", nil, err
	}
	return scanner.ImportDB(ctx, repos, dir)
}

// scanGates are the scan policies in configuration order: the first whose
// repository patterns match a repository applies to it.
type scanGates struct{ set policy.Set[*scan.RepoGate] }

// For returns the scan policy of repo, ok false when none applies.
func (gs scanGates) For(repo string) (*scan.RepoGate, bool) { return gs.set.First(repo) }

// compileScanGates translates the scan policies of the configuration into
// the scanner's. It returns an error, with the key, for a repository
// pattern, an expiry date or a gate that does not compile.
func compileScanGates(cfg config.Scan) (scanGates, error) {
	var out []policy.Entry[*scan.RepoGate]
	for i, p := range cfg.Policies {
		g := &scan.RepoGate{Name: p.Name, Mode: p.Mode, Timeout: p.Timeout.D(), Gate: scan.GatePolicy{
			MaxSeverity: p.MaxSeverity, UnknownSeverity: p.UnknownSeverity, IgnoreUnfixed: p.IgnoreUnfixed,
			FailOnUnchecked: p.FailOnUnchecked,
		}}
		repos, err := policy.ParsePatterns(p.Repositories)
		if err != nil {
			return scanGates{}, fmt.Errorf("scan.policies[%d].repositories: %w", i, err)
		}
		for j, a := range p.Allowlist {
			e := scan.AllowEntry{ID: a.ID, Package: a.Package, Reason: a.Reason}
			if a.Expires != "" {
				if err := e.Expires.UnmarshalText([]byte(a.Expires)); err != nil {
					return scanGates{}, fmt.Errorf("scan.policies[%d].allowlist[%d].expires: %w", i, j, err)
				}
			}
			g.Gate.Allowlist = append(g.Gate.Allowlist, e)
		}
		if err := g.Gate.Validate(); err != nil {
			return scanGates{}, fmt.Errorf("scan.policies[%d]: %w", i, err)
		}
		out = append(out, policy.Entry[*scan.RepoGate]{Patterns: repos, Value: g})
	}
	return scanGates{set: policy.NewSet(out...)}, nil
}
