package app

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/portcullis/portcullis/config"
)

// lockedWriter is a destination that counts its writes and may be read
// while written to.
type lockedWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	delay  time.Duration
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	time.Sleep(w.delay)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	return w.buf.Write(p)
}

func (w *lockedWriter) get() (string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String(), w.writes
}

func TestLogBufferBatches(t *testing.T) {
	t.Parallel()
	var out lockedWriter
	b := newLogBuffer(&out, 1<<20, time.Hour)
	var want strings.Builder
	for i := range 100 {
		line := fmt.Sprintf("line %d\n", i)
		want.WriteString(line)
		if n, err := b.Write([]byte(line)); n != len(line) || err != nil {
			t.Fatalf("Write: %d, %v", n, err)
		}
	}
	if got, writes := out.get(); writes != 0 || got != "" {
		t.Fatalf("before Flush: %d writes, %q", writes, got)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, writes := out.get(); writes != 1 || got != want.String() {
		t.Fatalf("after Flush: %d writes, %q", writes, got)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, writes := out.get(); writes != 1 {
		t.Errorf("an empty Flush wrote: %d writes", writes)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLogBufferWritesWithinInterval: a line is written when the interval
// after it ends, not before (fake time: testing/synctest).
func TestLogBufferWritesWithinInterval(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var out lockedWriter
		b := newLogBuffer(&out, 1<<20, 5*time.Millisecond)
		defer b.Close() //nolint:errcheck // the test checks the writes before
		_, _ = b.Write([]byte("one\n"))
		time.Sleep(5*time.Millisecond - time.Nanosecond)
		synctest.Wait()
		if got, _ := out.get(); got != "" {
			t.Fatalf("written before the interval ended: %q", got)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if got, writes := out.get(); got != "one\n" || writes != 1 {
			t.Fatalf("when the interval ended: %d writes, %q", writes, got)
		}
		_, _ = b.Write([]byte("two\n"))
		time.Sleep(5 * time.Millisecond)
		synctest.Wait()
		if got, writes := out.get(); got != "one\ntwo\n" || writes != 2 {
			t.Fatalf("after the second interval: %d writes, %q", writes, got)
		}
	})
}

// TestLogBufferWritesWhenFull: lines under the size wait for the interval;
// the line that fills the buffer has it written at once.
func TestLogBufferWritesWhenFull(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var out lockedWriter
		b := newLogBuffer(&out, 64, time.Hour)
		defer b.Close() //nolint:errcheck // the test checks the writes before
		small := strings.Repeat("a", 40) + "\n"
		_, _ = b.Write([]byte(small))
		time.Sleep(time.Hour - time.Nanosecond)
		synctest.Wait()
		if got, _ := out.get(); got != "" {
			t.Fatalf("%d bytes of 64 written before the interval: %q", len(small), got)
		}
		_, _ = b.Write([]byte(small))
		synctest.Wait()
		if got, writes := out.get(); got != small+small || writes != 1 {
			t.Fatalf("after the buffer filled: %d writes, %q", writes, got)
		}
	})
}

func TestLogBufferClose(t *testing.T) {
	t.Parallel()
	var out lockedWriter
	b := newLogBuffer(&out, 1<<20, time.Hour)
	_, _ = b.Write([]byte("before\n"))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := out.get(); got != "before\n" {
		t.Fatalf("after Close: %q", got)
	}
	_, _ = b.Write([]byte("after\n"))
	if got, _ := out.get(); got != "before\nafter\n" {
		t.Fatalf("a line after Close: %q", got)
	}
}

// TestLogBufferConcurrent: lines logged at once from many goroutines onto
// a slow destination all arrive, whole, once each, each goroutine's in
// its order, and the buffer never waits for more than a few batches.
func TestLogBufferConcurrent(t *testing.T) {
	t.Parallel()
	out := lockedWriter{delay: time.Millisecond}
	b := newLogBuffer(&out, 256, time.Millisecond)
	const writers, lines = 8, 500
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range lines {
				_, _ = b.Write(fmt.Appendf(nil, "g%d %d\n", g, i))
			}
		})
	}
	wg.Wait()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	got, writes := out.get()
	next := make([]int, writers)
	for _, line := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		var g, i int
		if _, err := fmt.Sscanf(line, "g%d %d", &g, &i); err != nil || g < 0 || g >= writers {
			t.Fatalf("line %q: %v", line, err)
		}
		if i != next[g] {
			t.Fatalf("goroutine %d: line %d after %d", g, i, next[g]-1)
		}
		next[g]++
	}
	for g, n := range next {
		if n != lines {
			t.Errorf("goroutine %d: %d lines, want %d", g, n, lines)
		}
	}
	if writes >= writers*lines/2 {
		t.Errorf("%d writes for %d lines: not batched", writes, writers*lines)
	}
}

// TestLoggerFlushesWarnings: on a LogBuffer, an info line waits for the
// next batch, and a warning goes out at once with the lines before it.
func TestLoggerFlushesWarnings(t *testing.T) {
	t.Parallel()
	var out lockedWriter
	b := newLogBuffer(&out, 1<<20, time.Hour)
	defer b.Close() //nolint:errcheck // the test checks the writes before
	log, err := NewLogger(config.Log{Level: "info", Format: "json"}, b)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("first")
	if got, _ := out.get(); got != "" {
		t.Fatalf("an info line written at once: %q", got)
	}
	log.With("k", "v").Warn("second")
	got, writes := out.get()
	if writes != 1 || !strings.Contains(got, `"msg":"first"`) || !strings.Contains(got, `"msg":"second"`) ||
		strings.Index(got, `"first"`) > strings.Index(got, `"second"`) {
		t.Errorf("after a warning: %d writes, %q", writes, got)
	}
}
