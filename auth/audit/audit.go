// Package audit writes the security audit log: one JSON line per
// authentication, per authorization decision and per write (push, tag,
// delete), saying who, from where, what, on which repository and digest,
// and the result.
//
// It never records secrets: events carry no passwords, tokens or
// Authorization headers. It must not import net/http or the token service;
// it imports only the standard library.
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"
)

// The kinds of event.
const (
	KindAuthentication = "authentication"
	KindDecision       = "decision"
	KindWrite          = "write"
	KindRobot          = "robot"
)

// The results an event may carry.
const (
	ResultSuccess = "success" // authentication succeeded, write done
	ResultFailure = "failure" // wrong credentials, failed write
	ResultAllowed = "allowed"
	ResultDenied  = "denied"
	ResultLocked  = "locked" // rejected by the login rate limit
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
	Scope  []string `json:"scope,omitempty"`
	Result string   `json:"result"`
	// Rule names the rule that made a decision.
	Rule string `json:"rule,omitempty"`
	// Reason is a short machine-chosen explanation, never secret material.
	Reason    string `json:"reason,omitempty"`
	RequestID string `json:"requestID,omitempty"`
	TokenID   string `json:"tokenID,omitempty"`
}

// Options configures a Log. The zero value means defaults.
type Options struct {
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger receives write failures; default slog.Default().
	Logger *slog.Logger
}

// Log writes events as JSON lines. It is safe for concurrent use. A nil
// *Log records nothing, so components may take an optional one.
type Log struct {
	mu     sync.Mutex
	w      io.Writer
	now    func() time.Time
	logger *slog.Logger
}

// New returns a Log writing to w. It returns an error if w is nil.
func New(w io.Writer, opts Options) (*Log, error) {
	if w == nil {
		return nil, errors.New("audit: nil writer")
	}
	l := &Log{w: w, now: opts.Now, logger: opts.Logger}
	if l.now == nil {
		l.now = time.Now
	}
	if l.logger == nil {
		l.logger = slog.Default()
	}
	return l, nil
}

// Record writes one event, stamping its time if unset. A failed write is
// logged (never returned: auditing must not fail the request it records).
func (l *Log) Record(ctx context.Context, e Event) {
	if l == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	e.Time = e.Time.UTC()
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
