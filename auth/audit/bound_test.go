package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestFieldsBounded(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l, err := New(&buf, Options{})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("é", 250<<10) // 500 KB, two bytes per rune
	scopes := make([]string, 64)
	for i := range scopes {
		scopes[i] = "repository:" + strings.Repeat("a", 1000) + ":pull"
	}
	l.Record(context.Background(), Event{
		Kind: KindAuthentication, Subject: "user:" + long, Addr: "10.0.0.1", Action: "login",
		Repository: long, Reason: long, Scope: scopes, Result: ResultFailure,
	})
	if n := buf.Len(); n > 16<<10 {
		t.Fatalf("line of %d bytes for 500 KB fields and 64 KB of scopes", n)
	}
	var e Event
	if err := json.Unmarshal(buf.Bytes(), &e); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]string{"subject": e.Subject, "repository": e.Repository, "reason": e.Reason} {
		if !strings.Contains(f, truncated) || !utf8.ValidString(f) || !strings.HasPrefix(long, strings.TrimPrefix(f[:DefaultMaxField/2], "user:")) {
			t.Errorf("%s not cut and marked: %.80q", name, f)
		}
	}
	if len(e.Scope) != DefaultMaxScopes || e.ScopeCount != 64 {
		t.Errorf("%d scopes audited with count %d, want %d and 64", len(e.Scope), e.ScopeCount, DefaultMaxScopes)
	}
	if got := bound("short", 10); got != "short" {
		t.Errorf("bound changed a short field: %q", got)
	}
}

func TestRatePerAddress(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { return now }
	l, err := New(&buf, Options{Now: clock, Burst: 10, Interval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// 1000 events in ten seconds from one address, a few from another, and
	// writes (never limited).
	for i := range 1000 {
		now = now.Add(10 * time.Millisecond)
		l.Record(ctx, Event{Kind: KindAuthentication, Addr: "203.0.113.7", Action: "login", Result: ResultFailure})
		if i%100 == 0 {
			l.Record(ctx, Event{Kind: KindAuthentication, Addr: "198.51.100.1", Action: "login", Result: ResultSuccess})
			l.RecordWrite(ctx, Write{Subject: "user:alice", Addr: "203.0.113.7", Action: "push", Repository: "team/app"})
		}
	}
	// A minute later the summary comes with the next event.
	now = now.Add(time.Minute)
	l.Record(ctx, Event{Kind: KindAuthentication, Addr: "203.0.113.7", Action: "login", Result: ResultFailure})

	count := map[string]int{}
	suppressed := 0
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var e Event
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatal(err)
		}
		count[e.Kind+" "+e.Addr]++
		suppressed += e.Suppressed
	}
	want := map[string]int{
		KindAuthentication + " 203.0.113.7":  10 + 1 + 1, // burst, one refilled during the ten seconds, the last
		KindSuppressed + " 203.0.113.7":      1,
		KindAuthentication + " 198.51.100.1": 10,
		KindWrite + " 203.0.113.7":           10,
	}
	if fmt.Sprint(count) != fmt.Sprint(want) {
		t.Errorf("lines per kind and address %v, want %v", count, want)
	}
	if suppressed != 1000-11 {
		t.Errorf("summaries count %d suppressed events, want %d", suppressed, 1000-11)
	}
}

func TestFileRotates(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit.log")
	f, err := OpenFile(path, Rotation{MaxSize: 1000, MaxFiles: 3})
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(f, Options{Burst: -1})
	if err != nil {
		t.Fatal(err)
	}
	for range 500 {
		l.Record(context.Background(), Event{Kind: KindAuthentication, Addr: "10.0.0.1", Subject: "user:" + strings.Repeat("x", 100), Result: ResultFailure})
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.Size() > 1000 || info.Size() == 0 {
			t.Errorf("%s: %d bytes, want 1 to 1000", e.Name(), info.Size())
		}
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", e.Name(), info.Mode())
		}
	}
	if fmt.Sprint(names) != "[audit.log audit.log.1 audit.log.2 audit.log.3]" {
		t.Errorf("files %v, want the log and three rotated ones", names)
	}
	// Reopening appends to what is there.
	f, err = OpenFile(path, Rotation{MaxSize: 1000, MaxFiles: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.size == 0 {
		t.Error("reopened file starts at size 0")
	}
}

func FuzzBound(f *testing.F) {
	f.Add("short", 10)
	f.Add(strings.Repeat("é", 100), 7)
	f.Fuzz(func(t *testing.T, s string, max int) {
		if max < 1 || max > 1<<16 {
			return
		}
		got := bound(s, max)
		if len(s) <= max {
			if got != s {
				t.Fatalf("bound(%q, %d) = %q", s, max, got)
			}
			return
		}
		prefix, _, ok := strings.Cut(got, truncated)
		if !ok || len(prefix) > max || !strings.HasPrefix(s, prefix) {
			t.Fatalf("bound(%q, %d) = %q", s, max, got)
		}
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Fatalf("bound(%q, %d) = %q is not UTF-8", s, max, got)
		}
	})
}
