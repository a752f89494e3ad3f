package app

import (
	"github.com/portcullis/portcullis/internal/referrers"
	"github.com/portcullis/portcullis/internal/replicate"
	"github.com/portcullis/portcullis/internal/scanner"
)

// buildReplication builds the replication service.
// What pull rules store is recorded in events, as pushes are.
func (a *App) buildReplication(repos indexedRepos, refs *referrers.Handler, events replicate.Events) (*replicate.Service, error) {
	remotes, err := a.buildRemotes()
	if err != nil {
		return nil, err
	}
	return replicate.New(replicate.Options{
		Config: a.cfg.Replication, Remotes: remotes, Local: &replicate.Local{Repos: repos, Refs: refs, Events: events, Reserved: []string{scanner.DBRepository}}, Catalog: repos,
		Driver: a.driver, Metadata: a.db.Bolt(), Log: a.log.With("component", "replication"), Metrics: a.metrics,
	})
}
