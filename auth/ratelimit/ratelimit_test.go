package ratelimit

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLimiter(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	l, err := New(Options{AddressFailures: 3, UserFailures: 5, Backoff: time.Second, MaxBackoff: 8 * time.Second, Window: time.Minute, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	allow := func(user, addr string) time.Duration {
		wait, ok := l.Allow(user, addr)
		if ok != (wait == 0) {
			t.Fatalf("Allow(%s, %s) = %s, %v", user, addr, wait, ok)
		}
		return wait
	}
	var waits []time.Duration
	for range 6 {
		if allow("alice", "a") == 0 {
			l.Failure("alice", "a")
		}
		waits = append(waits, allow("alice", "a"))
		now = now.Add(waits[len(waits)-1])
	}
	// Locked after the third failure; each further failure doubles the wait.
	if diff := cmp.Diff([]time.Duration{0, 0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}, waits); diff != "" {
		t.Errorf("backoff (-want +got):\n%s", diff)
	}
	if l.Failure("alice", "a"); allow("alice", "a") != 8*time.Second {
		t.Errorf("backoff not capped")
	}
	// Six failures: the user (threshold 5) is locked, except where trusted.
	if allow("alice", "b") == 0 {
		t.Error("locked user allowed from a new address")
	}
	l.Success("alice", "home") // records trust even while locked
	if allow("alice", "home") != 0 {
		t.Error("trusted address refused")
	}
	// Failures are forgotten after the window.
	now = now.Add(2 * time.Minute)
	l.Failure("bob", "c")
	if allow("bob", "c") != 0 || allow("alice", "b") != 0 {
		t.Error("old failures remembered")
	}
	if _, err := New(Options{Backoff: -1}); err == nil {
		t.Error("negative backoff accepted")
	}
}

func TestLimiterBounded(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	l, err := New(Options{MaxEntries: 100, Window: time.Minute, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		now = now.Add(time.Second)
		l.Failure("u"+string(rune(i)), "a"+string(rune(i)))
	}
	if n := len(l.entries); n > 101 {
		t.Errorf("%d entries, want at most 101", n)
	}
}
