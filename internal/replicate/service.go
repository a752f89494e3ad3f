package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
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
// replication. Each event rule has its own, OutboxName/<rule>, which the
// events of the first are passed on to.
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
	// Driver holds the rules' leases, failures and last runs, shared by
	// the replicas over one bucket.
	Driver storagedriver.StorageDriver
	// Metadata holds each event rule's outbox; Follow needs it.
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
	db             *bolt.DB
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
	// refs serializes the copies of one reference by one rule.
	refs keyLocks
}

// keyLocks are mutexes by key, each kept while someone holds or waits
// for it.
type keyLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	sync.Mutex
	waiters int
}

// lock locks key and returns its unlock.
func (k *keyLocks) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyLock{}
		k.m[key] = l
	}
	l.waiters++
	k.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		k.mu.Lock()
		if l.waiters--; l.waiters == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
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
	s := &Service{byName: map[string]*rule{}, accounts: map[string]bool{}, local: o.Local, catalog: o.Catalog,
		db: o.Metadata, status: newStatusStore(o.Driver), log: o.Log, now: o.Now}
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
	var err error
	if s.metrics, err = newMetrics(o.Metrics); err != nil {
		return nil, err
	}
	s.concurrency = max(o.Config.Concurrency, 1)
	return s, nil
}

// Follow makes Run consume box, the outbox the front handler records
// events in for replication: each event is passed on to the outbox of
// every event rule that matches its repository, where the rule's own
// dispatcher replicates it, with its own retries and backoff. Without
// Follow, rules run on their schedules only (a command-line run). It
// needs the metadata database (Options.Metadata).
func (s *Service) Follow(box *outbox.Outbox) error {
	if s.db == nil {
		return errors.New("replicate: following events needs the metadata database")
	}
	opts := outbox.DispatcherOptions{Concurrency: s.concurrency, MinBackoff: time.Second, MaxBackoff: time.Minute, Log: s.log, Now: s.now}
	for _, r := range s.rules {
		if !r.events() {
			continue
		}
		b, err := outbox.New(s.db, OutboxName+"/"+r.cfg.Name)
		if err != nil {
			return err
		}
		d, err := outbox.NewDispatcher(b, func(ctx context.Context, e outbox.Entry) error {
			return s.handleRule(ctx, r, e.Event)
		}, opts)
		if err != nil {
			return err
		}
		r.box, r.disp = b, d
	}
	// Passing events on touches the metadata database only: one at a
	// time keeps them in order.
	route := opts
	route.Concurrency = 1
	d, err := outbox.NewDispatcher(box, s.route, route)
	if err != nil {
		return err
	}
	s.box, s.disp = box, d
	return nil
}

// route passes an event on to the outbox of each event rule that matches
// its repository. An event pushed by another site's account goes nowhere.
func (s *Service) route(ctx context.Context, e outbox.Entry) error {
	var errs []error
	for _, r := range s.rulesFor(e.Event) {
		if err := r.box.Pass(ctx, e); err != nil {
			errs = append(errs, err)
		}
	}
	// A failure (or a crash before the event is deleted) keeps the event,
	// which goes again to every rule: a rule that has it already keeps
	// one.
	return errors.Join(errs...)
}

// Run follows the outbox and runs each rule's schedule until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, r := range s.rules {
		wg.Go(func() { s.schedule(ctx, r) })
	}
	wg.Go(func() { s.refreshPending(ctx) })
	wg.Go(func() { s.probe(ctx) })
	errs := make(chan error, len(s.rules)+1)
	if s.disp != nil {
		wg.Go(func() { errs <- s.disp.Run(ctx) })
		for _, r := range s.rules {
			if r.disp != nil {
				wg.Go(func() { errs <- r.disp.Run(ctx) })
			}
		}
	}
	<-ctx.Done()
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
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

// Handle copies what an event changes for every push rule with trigger
// event that matches, now (Run hands each rule its events by itself). It
// returns nil when the event is done (also when the destination refused
// it for good), an error when it should be tried again.
func (s *Service) Handle(ctx context.Context, e outbox.Entry) error {
	var errs []error
	for _, r := range s.rulesFor(e.Event) {
		if err := s.handleRule(ctx, r, e.Event); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// rulesFor returns the event rules that replicate ev: none for an event
// pushed by another site's account.
func (s *Service) rulesFor(ev outbox.Event) []*rule {
	if ev.Repository == "" || s.accounts[ev.Pusher] {
		return nil
	}
	var out []*rule
	for _, r := range s.rules {
		if r.events() && r.repos.Match(ev.Repository) {
			out = append(out, r)
		}
	}
	return out
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
		_, _, retry := s.copyOne(ctx, r, ev.Repository, ev.Tag, ev.Tag, ev.Time)
		return retry
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
		_, _, retry := s.copyOne(ctx, r, repo, string(subject), "", t)
		return retry
	}
	var errs []error
	for _, tag := range tags {
		if _, _, retry := s.copyOne(ctx, r, repo, tag, tag, t); retry != nil {
			errs = append(errs, retry)
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

// copyOne copies repo:ref by rule r and records the outcome under tag
// ("" for a copy by digest), returning the copy's result and error and
// outcome's. Copies of one reference by one rule run one at a time: the
// outcome recorded last is that of the copy that began last, which saw
// the newest content (a refusal of the unsigned image cannot land after
// the success of the copy its signature caused).
func (s *Service) copyOne(ctx context.Context, r *rule, repo, ref, tag string, since time.Time) (replication.Result, error, error) {
	unlock := s.refs.lock(r.cfg.Name + "\x00" + repo + "\x00" + ref)
	defer unlock()
	res, err := r.copier.Copy(ctx, repo, repo, ref)
	return res, err, s.outcome(ctx, r, repo, tag, res, err, since)
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
		if serr := s.status.ok(ctx, name, repo, tag, now); serr != nil {
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
	if serr := s.status.fail(ctx, name, f); serr != nil {
		s.log.WarnContext(ctx, "record replication status", "rule", name, "err", serr)
	}
	if permanent {
		s.log.WarnContext(ctx, "replication refused by the destination", "rule", name, "repo", repo, "ref", tag, "digest", res.Digest, "err", msg)
		return nil
	}
	return fmt.Errorf("replicate %s:%s by rule %s: %w", repo, tag, name, err)
}
