package replicate

import (
	"context"
	"time"
)

// pendingRefresh is how often the pending metric is computed.
const pendingRefresh = 15 * time.Second

// refreshPending sets the pending metric until ctx ends.
func (s *Service) refreshPending(ctx context.Context) {
	t := time.NewTicker(pendingRefresh)
	defer t.Stop()
	for {
		for name, p := range s.pending(ctx) {
			s.metrics.pending.WithLabelValues(name).Set(float64(p.count))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// maxPendingScan bounds the outbox entries read to count pending events.
const maxPendingScan = 100_000

// pendingCount is a rule's share of the outbox.
type pendingCount struct {
	count  int
	oldest time.Time
}

// pending counts the events each event rule still has to handle: those
// in its own outbox, and those of the shared outbox not yet passed on.
func (s *Service) pending(ctx context.Context) map[string]pendingCount {
	out := map[string]pendingCount{}
	for _, r := range s.rules {
		if !r.events() {
			continue
		}
		var p pendingCount
		if r.box != nil {
			p.count = r.box.Len()
			if first, err := r.box.Read(ctx, 0, 1); err == nil && len(first) == 1 {
				p.oldest = first[0].Event.Time
			}
		}
		out[r.cfg.Name] = p
	}
	if s.box == nil || s.box.Len() == 0 {
		return out
	}
	var after uint64
	for read := 0; read < maxPendingScan; {
		batch, err := s.box.Read(ctx, after, 1024)
		if err != nil || len(batch) == 0 {
			break
		}
		read += len(batch)
		for _, e := range batch {
			after = e.Seq
			if e.Event.Repository == "" || s.accounts[e.Event.Pusher] {
				continue
			}
			for _, r := range s.rules {
				if !r.events() || !r.repos.Match(e.Event.Repository) {
					continue
				}
				p := out[r.cfg.Name]
				p.count++
				if p.oldest.IsZero() || e.Event.Time.Before(p.oldest) {
					p.oldest = e.Event.Time
				}
				out[r.cfg.Name] = p
			}
		}
	}
	return out
}

// RuleStatus is what GET /api/v1/replication says about one rule.
type RuleStatus struct {
	Name    string `json:"name"`
	Mode    string `json:"mode"`
	Remote  string `json:"remote"`
	Trigger string `json:"trigger"`
	// Pending counts the events waiting (event rules), and
	// OldestPendingSeconds is the age of the oldest.
	Pending              int     `json:"pending"`
	OldestPendingSeconds float64 `json:"oldestPendingSeconds"`
	// RemoteAvailable is false while the remote's circuit breaker is open.
	RemoteAvailable bool       `json:"remoteAvailable"`
	LastSuccess     *time.Time `json:"lastSuccess,omitempty"`
	LastRun         *RunReport `json:"lastRun,omitempty"`
	// Failures are the images whose last copy failed, each with the error
	// (the destination's reason for a refusal), as recorded by any replica
	// (at most 1,000).
	Failures []Failure `json:"failures"`
	// StatusError says why Failures could not be read (the storage
	// backend failed).
	StatusError string `json:"statusError,omitempty"`
}

// Status returns the state of every rule, in configuration order.
func (s *Service) Status(ctx context.Context) []RuleStatus {
	pend := s.pending(ctx)
	now := s.now()
	out := make([]RuleStatus, 0, len(s.rules))
	for _, r := range s.rules {
		st := RuleStatus{Name: r.cfg.Name, Mode: r.cfg.Mode, Remote: r.cfg.Remote, Trigger: r.cfg.Trigger,
			RemoteAvailable: r.remote.State().Available}
		var err error
		if st.Failures, err = s.status.failures(ctx, r.cfg.Name); err != nil {
			st.Failures = []Failure{}
			st.StatusError = "the failures could not be read: " + err.Error()
		}
		if p, ok := pend[r.cfg.Name]; ok {
			st.Pending = p.count
			if !p.oldest.IsZero() {
				st.OldestPendingSeconds = now.Sub(p.oldest).Seconds()
			}
		}
		last, run := s.status.summary(ctx, r.cfg.Name)
		if !last.IsZero() {
			l := last.UTC()
			st.LastSuccess = &l
		}
		st.LastRun = run
		out = append(out, st)
	}
	return out
}
