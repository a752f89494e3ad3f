package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/lease"
	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/replication"
)

// OutboxName is the outbox the front handler records events in for
// replication.
const OutboxName = "replication"

// leaseRoot is where the rules' leases live in the storage backend.
const leaseRoot = "/portcullis/replication"

// Options configure a Service.
type Options struct {
	// Config is the replication section; its rules name Remotes.
	Config config.Replication
	// Remotes are the configured remotes by name.
	Remotes map[string]*replication.Remote
	// Local is this registry's storage; Catalog lists its repositories.
	Local   *Local
	Catalog Catalog
	// Driver holds the rules' leases.
	Driver storagedriver.StorageDriver
	// Metadata keeps the failures per image; nil: in memory.
	Metadata *bolt.DB
	// Holder names this replica in leases; default the host name.
	Holder  string
	Log     *slog.Logger
	Metrics prometheus.Registerer
	Now     func() time.Time
}

// Service runs the replication rules.
type Service struct {
	rules          []*rule
	byName         map[string]*rule
	accounts       map[string]bool
	local          *Local
	catalog        Catalog
	box            *outbox.Outbox
	disp           *outbox.Dispatcher
	status         *statusStore
	reconcileEvery time.Duration
	concurrency    int
	log            *slog.Logger
	metrics        *metrics
	now            func() time.Time

	// down holds the remotes to probe until they answer again.
	down downSet
}

// New builds the service for o. It fails when a rule names a remote that
// is not in o.Remotes or does not compile.
func New(o Options) (*Service, error) {
	if o.Local == nil || o.Catalog == nil || o.Driver == nil {
		return nil, errors.New("replicate: local storage, catalog and driver are required")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	st, err := newStatusStore(o.Metadata)
	if err != nil {
		return nil, err
	}
	s := &Service{byName: map[string]*rule{}, accounts: map[string]bool{}, local: o.Local, catalog: o.Catalog,
		status: st, log: o.Log, now: o.Now}
	if o.Config.ReconcileEvery != nil {
		s.reconcileEvery = o.Config.ReconcileEvery.D()
	}
	for _, a := range o.Config.Accounts {
		s.accounts[a] = true
	}
	for _, c := range o.Config.Rules {
		remote := o.Remotes[c.Remote]
		if remote == nil {
			return nil, fmt.Errorf("replication rule %s: no remote %q", c.Name, c.Remote)
		}
		l, err := lease.New(o.Driver, lease.Options{Path: leaseRoot + "/" + c.Name + "/lease", Holder: o.Holder, Now: o.Now})
		if err != nil {
			return nil, err
		}
		r, err := compileRule(c, remote, o.Local, l)
		if err != nil {
			return nil, err
		}
		s.rules = append(s.rules, r)
		s.byName[c.Name] = r
	}
	if s.metrics, err = newMetrics(o.Metrics); err != nil {
		return nil, err
	}
	s.concurrency = max(o.Config.Concurrency, 1)
	return s, nil
}

// Follow makes Run consume box, the outbox the front handler records
// events in for replication. Without it, rules run on their schedules
// only (a command-line run).
func (s *Service) Follow(box *outbox.Outbox) error {
	d, err := outbox.NewDispatcher(box, s.Handle, outbox.DispatcherOptions{
		Concurrency: s.concurrency, MinBackoff: time.Second, MaxBackoff: time.Minute, Log: s.log, Now: s.now})
	if err != nil {
		return err
	}
	s.box, s.disp = box, d
	return nil
}

// Run follows the outbox and runs each rule's schedule until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	done := make(chan struct{})
	n := 0
	for _, r := range s.rules {
		n++
		go func() {
			defer func() { done <- struct{}{} }()
			s.schedule(ctx, r)
		}()
	}
	n++
	go func() {
		defer func() { done <- struct{}{} }()
		s.refreshPending(ctx)
	}()
	n++
	go func() {
		defer func() { done <- struct{}{} }()
		s.probe(ctx)
	}()
	var err error
	if s.disp != nil {
		err = s.disp.Run(ctx)
	} else {
		<-ctx.Done()
	}
	for range n {
		<-done
	}
	return err
}

// ErrUnknownRule is returned by Trigger and RunRule for a rule that is not
// configured.
var ErrUnknownRule = errors.New("no such replication rule")

// Trigger asks for a run of the rule now, on this replica's scheduler.
func (s *Service) Trigger(name string) error {
	r := s.byName[name]
	if r == nil {
		return fmt.Errorf("%w: %q", ErrUnknownRule, name)
	}
	select {
	case r.run <- struct{}{}:
	default:
	}
	return nil
}

// period is how often a rule runs by itself; 0: only when triggered.
func (s *Service) period(r *rule) time.Duration {
	switch r.cfg.Trigger {
	case config.TriggerSchedule:
		return r.cfg.Interval.D()
	case config.TriggerEvent:
		return s.reconcileEvery
	}
	return 0
}

// schedule runs r every period, and when triggered, until ctx ends.
func (s *Service) schedule(ctx context.Context, r *rule) {
	var tick <-chan time.Time
	if p := s.period(r); p > 0 {
		t := time.NewTicker(p)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		case <-r.run:
		}
		rep, err := s.RunRule(ctx, r.cfg.Name)
		var busy *lease.BusyError
		switch {
		case errors.As(err, &busy):
			s.log.DebugContext(ctx, "replication run left to another replica", "rule", r.cfg.Name, "holder", busy.Holder)
		case err != nil && ctx.Err() == nil:
			s.log.WarnContext(ctx, "replication run failed", "rule", r.cfg.Name, "err", err)
		case err == nil:
			s.log.InfoContext(ctx, "replication run", "rule", r.cfg.Name, "checked", rep.Checked, "copied", rep.Copied,
				"deleted", rep.Deleted, "failed", rep.Failed)
		}
	}
}

// Handle is the replication outbox's consumer: it copies what an event changes
// for every push rule with trigger event that matches. It returns nil when
// the event is done (also when the destination refused it for good), an
// error to have it retried.
func (s *Service) Handle(ctx context.Context, e outbox.Entry) error {
	ev := e.Event
	if ev.Repository == "" || s.accounts[ev.Pusher] {
		return nil
	}
	var errs []error
	for _, r := range s.rules {
		if !r.events() || !r.repos.Match(ev.Repository) {
			continue
		}
		if err := s.handleRule(ctx, r, ev); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Service) handleRule(ctx context.Context, r *rule, ev outbox.Event) error {
	switch ev.Kind {
	case outbox.KindDelete:
		if !r.cfg.Deletes || ev.Tag == "" || !r.matchTag(ev.Tag) {
			return nil
		}
		err := r.remote.DeleteTag(ctx, ev.Repository, ev.Tag)
		return s.outcome(ctx, r, ev.Repository, ev.Tag, replication.Result{}, err, ev.Time)
	case outbox.KindTag:
		if subject, ok := cosignSubject(ev.Tag); ok {
			return s.referrer(ctx, r, ev.Repository, subject, ev.Time)
		}
		if !r.matchTag(ev.Tag) {
			return nil
		}
		res, err := r.copier.Copy(ctx, ev.Repository, ev.Repository, ev.Tag)
		return s.outcome(ctx, r, ev.Repository, ev.Tag, res, err, ev.Time)
	case outbox.KindPush:
		if ev.Subject != "" {
			return s.referrer(ctx, r, ev.Repository, ev.Subject, ev.Time)
		}
	}
	// A manifest pushed by digest alone goes with its tag or its subject.
	return nil
}

// referrer copies what a new referrer of subject changes: every tag of
// the rule that names subject, again (a destination that refused the
// unsigned image may accept it now), or the subject by digest when the
// destination has it without a tag (an index's child).
func (s *Service) referrer(ctx context.Context, r *rule, repo string, subject digest.Digest, t time.Time) error {
	tags, err := s.tagsOf(ctx, r, repo, subject)
	if err != nil {
		return err
	}
	if len(tags) == 0 {
		if _, err := r.remote.HeadManifest(ctx, repo, string(subject)); err != nil {
			if errors.Is(err, replication.ErrNotFound) {
				return nil // not replicated by this rule
			}
			return err
		}
		res, err := r.copier.Copy(ctx, repo, repo, string(subject))
		return s.outcome(ctx, r, repo, "", res, err, t)
	}
	var errs []error
	for _, tag := range tags {
		res, err := r.copier.Copy(ctx, repo, repo, tag)
		if err := s.outcome(ctx, r, repo, tag, res, err, t); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// tagsOf returns the tags of repo here that the rule copies and that name d.
func (s *Service) tagsOf(ctx context.Context, r *rule, repo string, d digest.Digest) ([]string, error) {
	all, err := s.local.Tags(ctx, repo)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, tag := range all {
		if _, ok := cosignSubject(tag); ok || !r.matchTag(tag) {
			continue
		}
		desc, err := s.local.HeadManifest(ctx, repo, tag)
		if err == nil && desc.Digest == d {
			out = append(out, tag)
		}
	}
	return out, nil
}

// outcome records the result of one copy (or tag deletion) and says
// whether to retry it: nil when it is done, also when the destination
// refused it for good.
func (s *Service) outcome(ctx context.Context, r *rule, repo, tag string, res replication.Result, err error, since time.Time) error {
	name := r.cfg.Name
	now := s.now()
	if err == nil {
		s.metrics.bytes.WithLabelValues(name).Add(float64(res.Bytes))
		if !since.IsZero() {
			s.metrics.lag.WithLabelValues(name).Observe(now.Sub(since).Seconds())
		}
		if serr := s.status.ok(name, repo, tag, now); serr != nil {
			s.log.WarnContext(ctx, "record replication status", "rule", name, "err", serr)
		}
		return nil
	}
	if ctx.Err() != nil {
		return err
	}
	if errors.Is(err, replication.ErrNotFound) && isLocal(err) {
		return nil // gone here since the event: nothing to copy
	}
	if errors.Is(err, replication.ErrUnavailable) && !isLocal(err) {
		s.down.add(r.remote)
	}
	permanent := replication.Permanent(err)
	s.metrics.failures.WithLabelValues(name, reason(err)).Inc()
	msg := err.Error()
	if permanent {
		msg = replication.Reason(err)
	}
	f := Failure{Repository: repo, Tag: tag, Digest: res.Digest, Error: msg, Permanent: permanent, Last: now}
	if serr := s.status.fail(name, f); serr != nil {
		s.log.WarnContext(ctx, "record replication status", "rule", name, "err", serr)
	}
	if permanent {
		s.log.WarnContext(ctx, "replication refused by the destination", "rule", name, "repo", repo, "ref", tag, "digest", res.Digest, "err", msg)
		return nil
	}
	return fmt.Errorf("replicate %s:%s by rule %s: %w", repo, tag, name, err)
}
