// Package audit writes the security audit log: one JSON line per
// authentication, per authorization decision and per write (push, tag,
// delete), saying who, from where, what, on which repository and digest,
// and the result.
//
// It never records secrets: events carry no passwords, tokens or
// Authorization headers. It cannot fill a disk: every field is cut to a
// bounded size, a request's scopes are bounded, each client address may
// write a burst of lines and then a steady rate (what goes over is counted
// and reported in one summary line per interval), and a file rotates by
// size into a bounded number of old files (see OpenFile). It must not import net/http or the token service;
// it imports only the standard library.
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// The kinds of event.
const (
	KindAuthentication = "authentication"
	KindDecision       = "decision"
	KindWrite          = "write"
	KindRobot          = "robot"
	// KindAdmin is a call of the management API (/api/v1/ listings and
	// robot accounts) by a caller it was granted to.
	KindAdmin = "admin"
	// KindScan is a stored vulnerability report that fails its
	// repository's scan policy.
	KindScan = "scan"
	// KindSuppressed summarises events of one client address left out
	// over its rate; Suppressed says how many.
	KindSuppressed = "suppressed"
)

// The results an event may carry.
const (
	ResultSuccess = "success" // authentication succeeded, write done
	ResultFailure = "failure" // wrong credentials, failed write
	ResultAllowed = "allowed"
	ResultDenied  = "denied"
	ResultLocked  = "locked" // rejected by the login rate limit
	// ResultSuppressed is the result of a KindSuppressed summary.
	ResultSuppressed = "suppressed"
)

// Event is one audit line.
type Event struct {
	Time time.Time `json:"time"`
	Kind string    `json:"kind"`
	// Subject is user:NAME, robot:NAME or anonymous; for a failed login the
	// name that was tried.
	Subject string `json:"subject,omitempty"`
	// Addr is the client's address.
	Addr string `json:"addr,omitempty"`
	// Action is what was attempted: login, token, pull, push, delete, tag,
	// create, revoke.
	Action     string `json:"action,omitempty"`
	Repository string `json:"repository,omitempty"`
	Tag        string `json:"tag,omitempty"`
	Digest     string `json:"digest,omitempty"`
	// Scope lists requested or granted scopes of a decision.
	Scope []string `json:"scope,omitempty"`
	// ScopeCount is the number of scopes when Scope holds only the first
	// of them.
	ScopeCount int    `json:"scopeCount,omitempty"`
	Result     string `json:"result"`
	// Rule names the rule that made a decision.
	Rule string `json:"rule,omitempty"`
	// Reason is a short machine-chosen explanation, never secret material.
	Reason    string `json:"reason,omitempty"`
	RequestID string `json:"requestID,omitempty"`
	TokenID   string `json:"tokenID,omitempty"`
	// Suppressed counts the events a KindSuppressed line stands for.
	Suppressed int `json:"suppressed,omitempty"`
}

// Options configures a Log. The zero value means defaults.
type Options struct {
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger receives write failures; default slog.Default().
	Logger *slog.Logger
	// MaxField bounds each string field of a line in bytes; longer values
	// are cut and marked. Default 256.
	MaxField int
	// MaxScopes bounds the scopes listed in one line; default 16.
	MaxScopes int
	// Burst is how many events one client address may write at once, and
	// per Interval after that; default 200. Negative: no limit. Writes
	// (KindWrite, which need a valid token) and events without an address
	// are never limited.
	Burst int
	// Interval over which Burst events refill, and between two summary
	// lines of one address; default 1 minute.
	Interval time.Duration
	// MaxAddresses bounds the client addresses tracked for the rate;
	// default 10000.
	MaxAddresses int
	// Observe, when set, sees every event before the rate limit and before
	// its fields are bounded (metrics count them); it must be quick and
	// must not keep the event.
	Observe func(Event)
}

// Defaults of Options.
const (
	DefaultMaxField     = 256
	DefaultMaxScopes    = 16
	DefaultBurst        = 200
	DefaultInterval     = time.Minute
	DefaultMaxAddresses = 10000
)

// Log writes events as JSON lines. It is safe for concurrent use. A nil
// *Log records nothing, so components may take an optional one.
type Log struct {
	mu        sync.Mutex
	w         io.Writer
	now       func() time.Time
	logger    *slog.Logger
	maxField  int
	maxScopes int
	limit     *suppressor // nil: no rate limit
	observe   func(Event) // nil: none
}

// New returns a Log writing to w. w may be nil when opts.Observe is set:
// the Log then writes nothing and only observes. It returns an error if
// both are nil.
func New(w io.Writer, opts Options) (*Log, error) {
	if w == nil && opts.Observe == nil {
		return nil, errors.New("audit: nil writer")
	}
	l := &Log{w: w, now: opts.Now, logger: opts.Logger, maxField: opts.MaxField, maxScopes: opts.MaxScopes, observe: opts.Observe}
	if l.now == nil {
		l.now = time.Now
	}
	if l.logger == nil {
		l.logger = slog.Default()
	}
	if l.maxField <= 0 {
		l.maxField = DefaultMaxField
	}
	if l.maxScopes <= 0 {
		l.maxScopes = DefaultMaxScopes
	}
	if opts.Burst >= 0 {
		burst, interval, addrs := opts.Burst, opts.Interval, opts.MaxAddresses
		if burst == 0 {
			burst = DefaultBurst
		}
		if interval <= 0 {
			interval = DefaultInterval
		}
		if addrs <= 0 {
			addrs = DefaultMaxAddresses
		}
		l.limit = newSuppressor(burst, interval, addrs)
	}
	return l, nil
}

// Record writes one event, stamping its time if unset, its fields bounded.
// An event over its address's rate is counted instead, and reported in a
// KindSuppressed line. A failed write is logged (never returned: auditing
// must not fail the request it records).
func (l *Log) Record(ctx context.Context, e Event) {
	if l == nil {
		return
	}
	if l.observe != nil {
		l.observe(e)
	}
	if l.w == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	e.Time = e.Time.UTC()
	e = bounded(e, l.maxField, l.maxScopes)
	if l.limit != nil && e.Addr != "" && e.Kind != KindWrite {
		ok, n := l.limit.admit(e.Addr, e.Time)
		if n > 0 {
			l.write(ctx, Event{
				Time: e.Time, Kind: KindSuppressed, Addr: e.Addr, Result: ResultSuppressed,
				Reason: strconv.Itoa(n) + " events suppressed", Suppressed: n,
			})
		}
		if !ok {
			return
		}
	}
	l.write(ctx, e)
}

func (l *Log) write(ctx context.Context, e Event) {
	line, err := json.Marshal(e)
	if err != nil {
		l.logger.ErrorContext(ctx, "audit event not encodable", "kind", e.Kind, "err", err)
		return
	}
	line = append(line, '\n')
	l.mu.Lock()
	_, err = l.w.Write(line)
	l.mu.Unlock()
	if err != nil {
		l.logger.ErrorContext(ctx, "audit write failed", "kind", e.Kind, "err", err)
	}
}

// Write is a registry write the server performed or refused.
type Write struct {
	Subject    string
	Addr       string
	Action     string // push, tag, delete
	Repository string
	Tag        string
	Digest     string
	// Err is nil for a write that happened; otherwise the reason, recorded
	// as its message.
	Err       error
	Rule      string
	RequestID string
}

// RecordWrite records a push, tag or delete: success when w.Err is nil,
// denied when a rule refused it (w.Rule set), failure otherwise.
func (l *Log) RecordWrite(ctx context.Context, w Write) {
	e := Event{
		Kind: KindWrite, Subject: w.Subject, Addr: w.Addr, Action: w.Action,
		Repository: w.Repository, Tag: w.Tag, Digest: w.Digest, Result: ResultSuccess,
		Rule: w.Rule, RequestID: w.RequestID,
	}
	if w.Err != nil {
		e.Result, e.Reason = ResultFailure, w.Err.Error()
		if w.Rule != "" {
			e.Result = ResultDenied
		}
	}
	l.Record(ctx, e)
}
