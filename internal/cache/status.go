package cache

import (
	"context"
	"sync"
	"time"
)

// heldEvery is how long the count of what a cache holds is reused: it
// takes a walk of the cache's state in the backend (one read per
// manifest), which a GET of /api/v1/caches must not cost every time.
const heldEvery = 30 * time.Second

// heldCounts remembers what each cache held when last counted.
type heldCounts struct {
	mu sync.Mutex // held while counting: one walk at a time
	m  map[string]heldCount
}

type heldCount struct {
	at        time.Time
	manifests int
	bytes     int64
}

// held returns how many manifests the cache at prefix holds and their
// bytes, counted at most every heldEvery.
func (s *Set) held(ctx context.Context, prefix string) (int, int64) {
	h := &s.heldCounts
	h.mu.Lock()
	defer h.mu.Unlock()
	if c, ok := h.m[prefix]; ok && s.now().Sub(c.at) < heldEvery {
		return c.manifests, c.bytes
	}
	ms, err := s.state.manifests(ctx, prefix)
	if err != nil {
		return 0, 0
	}
	c := heldCount{at: s.now(), manifests: len(ms)}
	for _, m := range ms {
		c.bytes += m.Size
	}
	if h.m == nil {
		h.m = map[string]heldCount{}
	}
	h.m[prefix] = c
	return c.manifests, c.bytes
}

// forgetHeld makes the next status of the cache at prefix count again.
func (s *Set) forgetHeld(prefix string) {
	s.heldCounts.mu.Lock()
	delete(s.heldCounts.m, prefix)
	s.heldCounts.mu.Unlock()
}

// Status is what a cache holds and how its remote is doing, for the API.
type Status struct {
	Prefix       string       `json:"prefix"`
	Remote       string       `json:"remote"`
	URL          string       `json:"url"`
	Hosts        []string     `json:"hosts,omitempty"`
	TagTTL       string       `json:"tagTTL"`
	StaleIfError string       `json:"staleIfError"`
	MaxAge       string       `json:"maxAge,omitempty"`
	MaxSize      int64        `json:"maxSize,omitempty"`
	Manifests    int          `json:"manifests"`
	Bytes        int64        `json:"bytes"`
	RemoteState  RemoteStatus `json:"remoteState"`
}

// RemoteStatus is the remote's state as the registry sees it.
type RemoteStatus struct {
	Available bool       `json:"available"`
	Failures  int        `json:"failures"`
	Since     *time.Time `json:"since,omitempty"`
	LastError string     `json:"lastError,omitempty"`
	// Refused is the last refusal of the registry's credentials.
	Refused string `json:"refused,omitempty"`
}

// Prefixes returns the caches' namespaces in configuration order.
func (s *Set) Prefixes() []string {
	out := make([]string, 0, len(s.caches))
	for _, c := range s.caches {
		out = append(out, c.Prefix)
	}
	return out
}

// Status returns the Status of the cache at prefix; nil when there is none.
func (s *Set) Status(ctx context.Context, prefix string) any {
	for _, st := range s.statuses(ctx, prefix) {
		return st
	}
	return nil
}

func (s *Set) statuses(ctx context.Context, prefix string) []Status {
	var out []Status
	for _, c := range s.caches {
		if c.Prefix != prefix {
			continue
		}
		st := c.Remote.State()
		rs := RemoteStatus{Available: st.Available, Failures: st.Failures, LastError: st.LastError, Refused: st.Refused}
		if !st.Since.IsZero() {
			since := st.Since
			rs.Since = &since
		}
		cs := Status{Prefix: c.Prefix, Remote: c.Remote.Name(), URL: c.Remote.URL(), Hosts: c.Hosts,
			TagTTL: c.TagTTL.String(), StaleIfError: c.StaleIfError.String(), MaxSize: c.MaxSize, RemoteState: rs}
		if c.MaxAge > 0 {
			cs.MaxAge = c.MaxAge.String()
		}
		cs.Manifests, cs.Bytes = s.held(ctx, c.Prefix)
		out = append(out, cs)
	}
	return out
}
