package replicate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/portcullis/portcullis/replication"
)

// RunReport says what one run of a rule did.
type RunReport struct {
	Rule     string    `json:"rule"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Checked counts the tags compared, Copied those copied, Deleted the
	// tags deleted, Failed the copies that failed.
	Checked int `json:"checked"`
	Copied  int `json:"copied"`
	Deleted int `json:"deleted"`
	Failed  int `json:"failed"`
	// Error is why the run stopped early, if it did.
	Error string `json:"error,omitempty"`
}

// RunRule runs the rule once now, on this replica, under the rule's lease:
// a push rule copies each tag here that it matches, with its referrers,
// where the remote lacks them or has the tag at another digest (a tag the
// destination refused for good is tried again only when its digest
// changes); a pull rule does the same the other way. With deletes on,
// tags gone from the source are deleted. It returns a *lease.BusyError
// when another replica is running the rule, and ErrUnknownRule.
func (s *Service) RunRule(ctx context.Context, name string) (RunReport, error) {
	r := s.byName[name]
	if r == nil {
		return RunReport{}, fmt.Errorf("%w: %q", ErrUnknownRule, name)
	}
	start := s.now()
	rep := RunReport{Rule: name, Started: start.UTC()}
	held, err := r.lease.Acquire(ctx, name+"-"+strconv.FormatInt(start.UnixNano(), 36))
	if err != nil {
		return rep, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := held.Keep(ctx, cancel)
	defer func() {
		stop()
		held.Release(context.WithoutCancel(ctx))
	}()
	if r.push() {
		err = s.syncPush(ctx, r, &rep)
	} else {
		err = s.syncPull(ctx, r, &rep)
	}
	if cause := context.Cause(ctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	rep.Finished = s.now().UTC()
	if err != nil {
		rep.Error = err.Error()
	}
	if serr := s.status.ran(context.WithoutCancel(ctx), name, rep); serr != nil {
		s.log.WarnContext(ctx, "record replication status", "rule", name, "err", serr)
	}
	return rep, err
}

// repositories returns the repositories here that the rule matches.
func (s *Service) repositories(ctx context.Context, r *rule) ([]string, error) {
	var out []string
	err := s.catalog.Enumerate(ctx, func(repo string) error {
		if r.repos.Match(repo) {
			out = append(out, repo)
		}
		return nil
	})
	return out, err
}

// tagSet lists the tags of a side that the rule copies, without cosign's
// tags, which go with their subjects.
func tagSet(r *rule, tags []string) []string {
	var out []string
	for _, t := range tags {
		if _, ok := cosignSubject(t); !ok && r.matchTag(t) {
			out = append(out, t)
		}
	}
	return out
}

func (s *Service) syncPush(ctx context.Context, r *rule, rep *RunReport) error {
	repos, err := s.repositories(ctx, r)
	if err != nil {
		return err
	}
	for _, repo := range repos {
		local, err := s.local.Tags(ctx, repo)
		if err != nil {
			return err
		}
		tags := tagSet(r, local)
		for _, tag := range tags {
			if err := s.syncTag(ctx, r, s.local, repo, tag, rep); err != nil {
				return err
			}
		}
		if r.cfg.Deletes {
			if err := s.syncDeletes(ctx, r, tags, repo, rep); err != nil {
				return err
			}
		}
	}
	return nil
}

// headSide is what syncTag needs of either side.
type headSide interface {
	HeadManifest(ctx context.Context, repo, ref string) (replication.Descriptor, error)
}

// syncTag copies repo:tag from src to the other side of the rule with its
// referrers, where they differ. It returns an error only when the run
// should stop (ctx ended).
func (s *Service) syncTag(ctx context.Context, r *rule, src headSide, repo, tag string, rep *RunReport) error {
	rep.Checked++
	want, err := src.HeadManifest(ctx, repo, tag)
	if err != nil {
		if errors.Is(err, replication.ErrNotFound) {
			return nil
		}
		rep.Failed++
		_ = s.outcome(ctx, r, repo, tag, replication.Result{}, err, time.Time{})
		return ctx.Err()
	}
	// The tag may be there already: copying again still repairs missing
	// referrers (a signature made since), and sends nothing the other side
	// has.
	if f, ok := s.status.failure(ctx, r.cfg.Name, repo, tag); ok && f.Permanent && f.Digest == want.Digest {
		return nil // refused for good: tried again when it changes
	}
	res, err, retry := s.copyOne(ctx, r, repo, tag, tag, time.Time{})
	if res.Manifests > 0 {
		rep.Copied++
	}
	if retry != nil || (err != nil && replication.Permanent(err)) {
		rep.Failed++
	}
	return ctx.Err()
}

// syncDeletes deletes at the remote the tags of repo the rule copies that
// are not here any more.
func (s *Service) syncDeletes(ctx context.Context, r *rule, here []string, repo string, rep *RunReport) error {
	there, err := r.remote.Tags(ctx, repo)
	if err != nil {
		rep.Failed++
		_ = s.outcome(ctx, r, repo, "", replication.Result{}, err, time.Time{})
		return ctx.Err()
	}
	_ = s.outcome(ctx, r, repo, "", replication.Result{}, nil, time.Time{})
	keep := map[string]bool{}
	for _, t := range here {
		keep[t] = true
	}
	for _, t := range tagSet(r, there) {
		if keep[t] {
			continue
		}
		err := r.remote.DeleteTag(ctx, repo, t)
		if s.outcome(ctx, r, repo, t, replication.Result{}, err, time.Time{}) != nil {
			rep.Failed++
		} else if err == nil {
			rep.Deleted++
		}
	}
	return ctx.Err()
}

// pullRepositories returns the repositories a pull rule fetches: those it
// names, and those of the remote's catalog its patterns match. A catalog
// the remote refuses (or fails to list) is recorded as the failure of the
// patterns, and the named repositories are still returned.
func (s *Service) pullRepositories(ctx context.Context, r *rule, rep *RunReport) []string {
	var out, patterns []string
	seen := map[string]bool{}
	for _, p := range r.cfg.Repositories {
		if literal(p) {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
			continue
		}
		patterns = append(patterns, p)
	}
	if len(patterns) == 0 {
		return out
	}
	// The failure of a listing is recorded under the patterns it was for.
	key := strings.Join(patterns, " ")
	catalog, err := r.remote.Catalog(ctx)
	if err != nil {
		rep.Failed++
		if ctx.Err() == nil {
			s.metrics.failures.WithLabelValues(r.cfg.Name, reason(err)).Inc()
			f := Failure{Repository: key, Error: "list the remote's catalog: " + replication.Reason(err), Last: s.now()}
			if serr := s.status.fail(ctx, r.cfg.Name, f); serr != nil {
				s.log.WarnContext(ctx, "record replication status", "rule", r.cfg.Name, "err", serr)
			}
		}
		return out
	}
	_ = s.outcome(ctx, r, key, "", replication.Result{}, nil, time.Time{})
	for _, repo := range catalog {
		if !seen[repo] && r.repos.Match(repo) && !s.local.reserved(repo) {
			seen[repo] = true
			out = append(out, repo)
		}
	}
	return out
}

func (s *Service) syncPull(ctx context.Context, r *rule, rep *RunReport) error {
	for _, repo := range s.pullRepositories(ctx, r, rep) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		remote, err := r.remote.Tags(ctx, repo)
		if err != nil {
			rep.Failed++
			_ = s.outcome(ctx, r, repo, "", replication.Result{}, err, time.Time{})
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		// Listed: a failure to list recorded earlier is over.
		_ = s.outcome(ctx, r, repo, "", replication.Result{}, nil, time.Time{})
		tags := tagSet(r, remote)
		for _, tag := range tags {
			if err := s.syncTag(ctx, r, r.remote, repo, tag, rep); err != nil {
				return err
			}
		}
		if r.cfg.Deletes {
			here, err := s.local.Tags(ctx, repo)
			if err != nil {
				return err
			}
			keep := map[string]bool{}
			for _, t := range tags {
				keep[t] = true
			}
			for _, t := range tagSet(r, here) {
				if !keep[t] {
					if err := s.local.DeleteTag(ctx, repo, t); err != nil {
						return err
					}
					rep.Deleted++
				}
			}
		}
	}
	return nil
}

// literal reports whether a repository pattern names one repository.
func literal(p string) bool {
	for _, c := range p {
		switch c {
		case '*', '?', '[', '{':
			return false
		}
	}
	return true
}
