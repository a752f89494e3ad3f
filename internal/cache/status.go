package cache

import (
	"context"
	"time"
)

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
		if ms, err := s.state.manifests(ctx, c.Prefix); err == nil {
			cs.Manifests = len(ms)
			for _, m := range ms {
				cs.Bytes += m.Size
			}
		}
		out = append(out, cs)
	}
	return out
}
