package config

import (
	"fmt"
	"time"

	"github.com/portcullis/portcullis/policy"
)

// Replication copies images, with their signatures and SBOMs, between this
// registry and other sites.
type Replication struct {
	// Rules say what is copied, in which direction and when.
	Rules []ReplicationRule `yaml:"rules"`
	// ReconcileEvery is how often each push rule compares its tags with the
	// remote's and repairs what events missed; 0s turns reconciling off.
	// Default 10m.
	ReconcileEvery *Duration `yaml:"reconcileEvery"`
	// Concurrency is how many images are copied at once; default 4.
	Concurrency int `yaml:"concurrency"`
	// Accounts are the logins other sites use to push here: what they push
	// is not replicated again, so rules in both directions are safe.
	Accounts []string `yaml:"accounts"`
}

// Replication modes.
const (
	ReplicationPush = "push"
	ReplicationPull = "pull"
)

// Replication triggers.
const (
	TriggerEvent    = "event"
	TriggerSchedule = "schedule"
	TriggerManual   = "manual"
)

// ReplicationRule is one direction of copying between this registry and a
// remote.
type ReplicationRule struct {
	// Name identifies the rule in the status, metrics and the CLI.
	Name string `yaml:"name"`
	// Mode is push (this site sends) or pull (this site fetches).
	Mode string `yaml:"mode"`
	// Remote names an entry of remotes.
	Remote string `yaml:"remote"`
	// Repositories are patterns as in auth rules (prod/**). A pull rule
	// fetches the repositories named without wildcards, and those of the
	// remote's catalog (GET /v2/_catalog) that a pattern matches: the
	// catalog is listed only when a pattern has wildcards.
	Repositories []string `yaml:"repositories"`
	// Tags are optional glob patterns on the tag name; none means every tag.
	Tags []string `yaml:"tags"`
	// Trigger is event (each push is copied, push rules only), schedule
	// (every Interval) or manual (`registry replicate run`). Default event
	// for push rules, schedule for pull rules.
	Trigger string `yaml:"trigger"`
	// Interval is how often a schedule rule runs; default 10m.
	Interval Duration `yaml:"interval"`
	// Deletes replicates tag deletions.
	Deletes bool `yaml:"deletes"`
}

// RepositoryPatterns returns the rule's repository patterns compiled.
func (r ReplicationRule) RepositoryPatterns() (policy.Patterns, error) {
	return policy.ParsePatterns(r.Repositories)
}

// TagGlobs returns the rule's tag patterns compiled; none matches every tag.
func (r ReplicationRule) TagGlobs() ([]policy.Glob, error) {
	return KeepRule{Tags: r.Tags}.TagGlobs()
}

func (r *Replication) provision() {
	if r.ReconcileEvery == nil {
		d := Duration(10 * time.Minute)
		r.ReconcileEvery = &d
	}
	if r.Concurrency == 0 {
		r.Concurrency = 4
	}
	for i := range r.Rules {
		rule := &r.Rules[i]
		if rule.Trigger == "" {
			rule.Trigger = TriggerEvent
			if rule.Mode == ReplicationPull {
				rule.Trigger = TriggerSchedule
			}
		}
		if rule.Interval == 0 {
			rule.Interval = Duration(10 * time.Minute)
		}
	}
}

func (r *Replication) validate(bad func(key, format string, args ...any), remotes []Remote) {
	known := map[string]bool{}
	for _, rm := range remotes {
		known[rm.Name] = true
	}
	if r.ReconcileEvery != nil && *r.ReconcileEvery < 0 {
		bad("replication.reconcileEvery", "must not be negative (0s turns reconciling off)")
	}
	if r.Concurrency < 0 || r.Concurrency > 64 {
		bad("replication.concurrency", "must be between 1 and 64")
	}
	for i, a := range r.Accounts {
		if a == "" {
			bad(fmt.Sprintf("replication.accounts[%d]", i), "must not be empty")
		}
	}
	names := map[string]int{}
	for i, rule := range r.Rules {
		key := fmt.Sprintf("replication.rules[%d]", i)
		switch {
		case rule.Name == "":
			bad(key+".name", "required")
		case !repoPath().MatchString(rule.Name) || len(rule.Name) > 64:
			bad(key+".name", "%q must be lower-case letters, digits and separators . _ -", rule.Name)
		default:
			if j, dup := names[rule.Name]; dup {
				bad(key+".name", "%q is also the name of replication.rules[%d]", rule.Name, j)
			}
			names[rule.Name] = i
		}
		switch rule.Mode {
		case ReplicationPush, ReplicationPull:
		default:
			bad(key+".mode", "must be push or pull, got %q", rule.Mode)
		}
		if rule.Remote == "" {
			bad(key+".remote", "required: the name of an entry of remotes")
		} else if !known[rule.Remote] {
			bad(key+".remote", "%q is not the name of an entry of remotes", rule.Remote)
		}
		if len(rule.Repositories) == 0 {
			bad(key+".repositories", "must list at least one repository pattern (** for all)")
		}
		for j, s := range rule.Repositories {
			if _, err := policy.ParsePattern(s); err != nil {
				bad(fmt.Sprintf("%s.repositories[%d]", key, j), "%v", err)
			}
		}
		for j, s := range rule.Tags {
			if _, err := parseTagGlob(s); err != nil {
				bad(fmt.Sprintf("%s.tags[%d]", key, j), "%v", err)
			}
		}
		switch rule.Trigger {
		case TriggerEvent:
			if rule.Mode == ReplicationPull {
				bad(key+".trigger", "a pull rule has no events of this registry to follow: use schedule or manual")
			}
		case TriggerSchedule, TriggerManual:
		default:
			bad(key+".trigger", "must be event, schedule or manual, got %q", rule.Trigger)
		}
		if rule.Interval < 0 {
			bad(key+".interval", "must not be negative")
		} else if rule.Trigger == TriggerSchedule && rule.Interval.D() < time.Second {
			bad(key+".interval", "must be at least 1s")
		}
	}
}
