package audit

import (
	"sync"
	"time"
)

// suppressor is a token bucket per client address: each address may write
// burst events at once and burst per interval after that. Events over the
// limit are counted, and reported in one summary line per interval. It is
// safe for concurrent use.
type suppressor struct {
	burst    float64
	interval time.Duration
	max      int

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens     float64
	last       time.Time // of the last refill
	suppressed int       // events dropped since the last summary
	reported   time.Time // when the last summary was written
}

func newSuppressor(burst int, interval time.Duration, maxAddrs int) *suppressor {
	return &suppressor{burst: float64(burst), interval: interval, max: maxAddrs, buckets: map[string]*bucket{}}
}

// admit reports whether an event from addr may be written now, and how many
// suppressed events from addr to report in a summary line (at most one per
// interval) before it, or instead of it when it is suppressed itself.
func (s *suppressor) admit(addr string, now time.Time) (ok bool, summary int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, found := s.buckets[addr]
	if !found {
		s.makeRoom(now)
		b = &bucket{tokens: s.burst, last: now, reported: now}
		s.buckets[addr] = b
	}
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = min(s.burst, b.tokens+s.burst*float64(elapsed)/float64(s.interval))
		b.last = now
	}
	ok = b.tokens >= 1
	if ok {
		b.tokens--
	} else {
		b.suppressed++
	}
	if b.suppressed > 0 && now.Sub(b.reported) >= s.interval {
		summary, b.suppressed, b.reported = b.suppressed, 0, now
	}
	return ok, summary
}

// makeRoom keeps the number of tracked addresses bounded: when full, it
// forgets the addresses whose buckets have refilled with nothing to report,
// then, if still full, all of them.
func (s *suppressor) makeRoom(now time.Time) {
	if len(s.buckets) < s.max {
		return
	}
	for addr, b := range s.buckets {
		if b.suppressed == 0 && now.Sub(b.last) >= s.interval {
			delete(s.buckets, addr)
		}
	}
	if len(s.buckets) >= s.max {
		clear(s.buckets)
	}
}
