package replicate

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/portcullis/portcullis/replication"
)

// probeEvery is how often a remote that failed as unavailable is asked
// whether it is back (its circuit breaker lets one call through every
// openFor; the other probes fail at once without a request).
const probeEvery = time.Second

// downSet holds the remotes whose calls failed as unavailable, until a
// probe finds them back.
type downSet struct {
	mu sync.Mutex
	m  map[*replication.Remote]bool
}

func (d *downSet) add(r *replication.Remote) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[*replication.Remote]bool{}
	}
	d.m[r] = true
}

func (d *downSet) list() []*replication.Remote {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*replication.Remote, 0, len(d.m))
	for r := range d.m {
		out = append(out, r)
	}
	return out
}

func (d *downSet) remove(r *replication.Remote) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.m, r)
}

// probe pings every remote marked down each probeEvery until ctx ends.
// When one answers, the events kept for a retry are tried again at once,
// instead of each after its own backoff (up to a minute): what piled up
// while a site was away leaves as soon as it is back.
func (s *Service) probe(ctx context.Context) {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, r := range s.down.list() {
			if err := r.Ping(ctx); err != nil && errors.Is(err, replication.ErrUnavailable) {
				continue
			}
			s.down.remove(r)
			// The events of the rules to this remote wait in each
			// rule's own outbox.
			for _, rr := range s.rules {
				if rr.remote == r && rr.disp != nil {
					rr.disp.Wake()
				}
			}
		}
	}
}
