package replicate

import (
	"fmt"
	"regexp"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/lease"
	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/replication"
	"github.com/portcullis/portcullis/scan/artifact"
)

// rule is one compiled replication rule.
type rule struct {
	cfg    config.ReplicationRule
	repos  policy.Patterns
	tags   []policy.Glob
	remote *replication.Remote
	// copier copies from here to the remote (push) or back (pull).
	copier *replication.Copier
	lease  *lease.Lease
	// run asks the scheduler for a run now (manual trigger).
	run chan struct{}
	// box holds the events this rule has yet to replicate (event rules,
	// once the service follows the registry's events), and disp hands
	// them out: each rule makes progress of its own, so a remote that is
	// down delays no other rule.
	box  *outbox.Outbox
	disp *outbox.Dispatcher
}

func compileRule(c config.ReplicationRule, remote *replication.Remote, local *Local, l *lease.Lease) (*rule, error) {
	repos, err := c.RepositoryPatterns()
	if err != nil {
		return nil, fmt.Errorf("replication rule %s: %w", c.Name, err)
	}
	tags, err := c.TagGlobs()
	if err != nil {
		return nil, fmt.Errorf("replication rule %s: %w", c.Name, err)
	}
	r := &rule{cfg: c, repos: repos, tags: tags, remote: remote, lease: l, run: make(chan struct{}, 1)}
	// Each site's scanner makes its own reports and inventories: they are
	// never copied, either way (a destination refuses them from clients).
	opts := replication.CopierOptions{SkipReferrer: scannerOwn}
	if c.Mode == config.ReplicationPull {
		r.copier = replication.NewCopier(remote, local, opts)
	} else {
		r.copier = replication.NewCopier(local, remote, opts)
	}
	return r, nil
}

// scannerOwn reports whether a manifest is one a registry's scanner
// stores itself (a reserved type or annotation).
func scannerOwn(body []byte) bool { return artifact.ReservedIn(body) != "" }

func (r *rule) push() bool { return r.cfg.Mode == config.ReplicationPush }

// events reports whether the rule follows this registry's events.
func (r *rule) events() bool { return r.push() && r.cfg.Trigger == config.TriggerEvent }

// matchTag reports whether the rule copies tag.
func (r *rule) matchTag(tag string) bool {
	if len(r.tags) == 0 {
		return true
	}
	for _, g := range r.tags {
		if g.Match(tag) {
			return true
		}
	}
	return false
}

// cosignTag is a tag cosign attaches to its subject.
var cosignTag = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^(sha256|sha512)-([0-9a-f]{64}|[0-9a-f]{128})\.(sig|att|sbom)$`)
})

// cosignSubject returns the subject a cosign tag belongs to.
func cosignSubject(tag string) (digest.Digest, bool) {
	m := cosignTag().FindStringSubmatch(tag)
	if m == nil {
		return "", false
	}
	d := digest.NewDigestFromEncoded(digest.Algorithm(m[1]), m[2])
	return d, d.Validate() == nil
}
