package app

import (
	"github.com/portcullis/portcullis/internal/referrers"
	"github.com/portcullis/portcullis/internal/replicate"
)

// buildReplication builds the replication service; nil without rules.
func (a *App) buildReplication(repos indexedRepos, refs *referrers.Handler) (*replicate.Service, error) {
	if len(a.cfg.Replication.Rules) == 0 {
		return nil, nil
	}
	remotes, err := a.buildRemotes()
	if err != nil {
		return nil, err
	}
	return replicate.New(replicate.Options{
		Config: a.cfg.Replication, Remotes: remotes, Local: &replicate.Local{Repos: repos, Refs: refs}, Catalog: repos,
		Driver: a.driver, Metadata: a.db.Bolt(), Log: a.log.With("component", "replication"), Metrics: a.metrics,
	})
}
