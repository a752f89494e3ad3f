package replication

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestResponseHeaderTimeout(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authNone, false)
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		<-r.Context().Done() // never answers; the client gives up
		return true
	})
	r := newRemote(t, up, Options{ResponseHeaderTimeout: 50 * time.Millisecond})
	_, _, err := r.GetManifest(t.Context(), "library/app", "1.0")
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("err = %v, want ErrUnavailable for a timeout", err)
	}
}

// slowBlob answers blob GETs with headers and "first" at once, and
// "second" once release is closed.
func slowBlob(release <-chan struct{}) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Length", "11")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "first")
		http.NewResponseController(w).Flush()
		select {
		case <-release:
			_, _ = io.WriteString(w, "second")
		case <-r.Context().Done():
		}
		return true
	}
}

func TestBlobBodyIsNotBoundByTimeouts(t *testing.T) {
	t.Parallel()
	// Short, but not so short that a dial to loopback on a loaded machine
	// misses it (50 ms did, once in CI).
	const timeout = 250 * time.Millisecond
	release := make(chan struct{})
	up := newUpstream(t, authNone, false)
	up.setFault(slowBlob(release))
	r := newRemote(t, up, Options{ResponseHeaderTimeout: timeout, DialTimeout: timeout})
	rc, n, err := r.GetBlob(t.Context(), "library/app", digest.FromString("firstsecond"))
	if err != nil {
		t.Fatalf("GetBlob: %v", err)
	}
	defer rc.Close()
	first := make([]byte, 5)
	if _, err := io.ReadFull(rc, first); err != nil {
		t.Fatal(err)
	}
	// The body stalls for several times every timeout of the client: the
	// stall is what is tested.
	<-time.After(4 * timeout)
	close(release)
	rest, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading after the stall: %v", err)
	}
	if got := string(first) + string(rest); got != "firstsecond" || n != 11 {
		t.Errorf("body = %q (length %d), want firstsecond (11)", got, n)
	}
}

func TestBlobBodyEndsWithContext(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authNone, false)
	up.setFault(slowBlob(nil))
	r := newRemote(t, up, Options{})
	ctx, cancel := context.WithCancel(t.Context())
	rc, _, err := r.GetBlob(ctx, "library/app", digest.FromString("firstsecond"))
	if err != nil {
		t.Fatalf("GetBlob: %v", err)
	}
	defer rc.Close()
	if _, err := io.ReadFull(rc, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := io.ReadAll(rc); !errors.Is(err, context.Canceled) {
		t.Errorf("read after cancel: err = %v, want context.Canceled", err)
	}
}
