package replication

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
)

func TestAnonymousReads(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authNone, false)
	img := randomImage(t)
	d := up.seed("library/app", "1.0", img)
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	want := Descriptor{MediaType: string(mt), Digest: digest.Digest(d.String()), Size: int64(len(raw))}
	r := newRemote(t, up, Options{})
	ctx := t.Context()

	for _, ref := range []string{"1.0", d.String()} {
		got, err := r.HeadManifest(ctx, "library/app", ref)
		if err != nil {
			t.Fatalf("HeadManifest(%s): %v", ref, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("HeadManifest(%s) (-want +got):\n%s", ref, diff)
		}
		got, body, err := r.GetManifest(ctx, "library/app", ref)
		if err != nil {
			t.Fatalf("GetManifest(%s): %v", ref, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("GetManifest(%s) (-want +got):\n%s", ref, diff)
		}
		if string(body) != string(raw) {
			t.Errorf("GetManifest(%s) body differs from what was pushed", ref)
		}
	}

	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ld, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	size, err := layers[0].Size()
	if err != nil {
		t.Fatal(err)
	}
	bd := digest.Digest(ld.String())
	desc, err := r.HeadBlob(ctx, "library/app", bd)
	if err != nil {
		t.Fatalf("HeadBlob: %v", err)
	}
	if desc.Digest != bd || desc.Size != size {
		t.Errorf("HeadBlob = %+v, want digest %s size %d", desc, bd, size)
	}
	rc, n, err := r.GetBlob(ctx, "library/app", bd)
	if err != nil {
		t.Fatalf("GetBlob: %v", err)
	}
	defer rc.Close()
	verifier := bd.Verifier()
	copied, err := io.Copy(verifier, rc)
	if err != nil {
		t.Fatal(err)
	}
	if n != size || copied != size || !verifier.Verified() {
		t.Errorf("GetBlob: length %d, read %d, verified %v; want %d bytes of %s", n, copied, verifier.Verified(), size, bd)
	}
	if up.tokenRequests.Load() != 0 {
		t.Errorf("token requests = %d, want 0 for an anonymous remote", up.tokenRequests.Load())
	}
}

func TestBearerTokenIsCached(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authBearer, false)
	up.seed("library/app", "1.0", randomImage(t))
	r := newRemote(t, up, Options{})
	for i := range 10 {
		if _, _, err := r.GetManifest(t.Context(), "library/app", "1.0"); err != nil {
			t.Fatalf("GetManifest #%d: %v", i, err)
		}
	}
	if got := up.tokenRequests.Load(); got != 1 {
		t.Errorf("token requests = %d, want 1", got)
	}
	// The first call is sent anonymously, then with the token; the other
	// nine carry the token at once.
	if got := up.requests.Load(); got != 11 {
		t.Errorf("registry requests = %d, want 11", got)
	}
	if diff := cmp.Diff([]string{"repository:library/app:pull"}, up.scopes); diff != "" {
		t.Errorf("token scopes (-want +got):\n%s", diff)
	}
}

func TestBearerTokenSingleFlight(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authBearer, false)
	up.seed("library/app", "1.0", randomImage(t))
	r := newRemote(t, up, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			_, _, err := r.GetManifest(t.Context(), "library/app", "1.0")
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("GetManifest: %v", err)
		}
	}
	if got := up.tokenRequests.Load(); got != 1 {
		t.Errorf("token requests = %d, want 1 for 20 concurrent calls", got)
	}
}

func TestBearerTokenExpiry(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authBearer, false)
	up.expiresIn = 60
	up.seed("library/app", "1.0", randomImage(t))
	clk := newClock()
	r := newRemote(t, up, Options{Now: clk.Now})
	steps := []struct {
		advance    time.Duration
		wantTokens int64
	}{
		{0, 1},
		{29 * time.Second, 1}, // 31s left: still used
		{2 * time.Second, 2},  // 29s left: renewed
		{29 * time.Second, 2}, // the new one is used
		{2 * time.Second, 3},  // and renewed in turn
		{10 * time.Minute, 4}, // long expired
		{0, 4},
	}
	for i, s := range steps {
		clk.Advance(s.advance)
		if _, err := r.HeadManifest(t.Context(), "library/app", "1.0"); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := up.tokenRequests.Load(); got != s.wantTokens {
			t.Errorf("step %d: token requests = %d, want %d", i, got, s.wantTokens)
		}
	}
}

func TestBearerTokenRejectedIsRefreshedOnce(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authBearer, false)
	up.seed("library/app", "1.0", randomImage(t))
	r := newRemote(t, up, Options{})
	if _, err := r.HeadManifest(t.Context(), "library/app", "1.0"); err != nil {
		t.Fatal(err)
	}
	up.revokeTokens()
	before := up.requests.Load()
	if _, err := r.HeadManifest(t.Context(), "library/app", "1.0"); err != nil {
		t.Fatalf("after revocation: %v", err)
	}
	if got := up.tokenRequests.Load(); got != 2 {
		t.Errorf("token requests = %d, want 2", got)
	}
	if got := up.requests.Load() - before; got != 2 {
		t.Errorf("registry requests = %d, want 2 (rejected, then with the new token)", got)
	}

	// A registry that rejects every token: one refresh, then ErrUnauthorized.
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+up.srv.URL+`/token",service="test"`)
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "token rejected")
		return true
	})
	before, tokensBefore := up.requests.Load(), up.tokenRequests.Load()
	_, err := r.HeadManifest(t.Context(), "library/app", "1.0")
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
	if got := up.requests.Load() - before; got != 2 {
		t.Errorf("registry requests = %d, want 2", got)
	}
	if got := up.tokenRequests.Load() - tokensBefore; got != 1 {
		t.Errorf("token requests = %d, want 1", got)
	}
}

func TestBasicAuth(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authBasic, false)
	up.setCredentials("alice", "s3cret")
	up.seed("library/app", "1.0", randomImage(t))
	uf, pf := writeCredentials(t, "alice", "s3cret")
	r := newRemote(t, up, Options{UsernameFile: uf, PasswordFile: pf})
	for i := range 3 {
		if _, _, err := r.GetManifest(t.Context(), "library/app", "1.0"); err != nil {
			t.Fatalf("GetManifest #%d: %v", i, err)
		}
	}
	// 401 then with credentials; then the credentials are sent at once.
	if got := up.requests.Load(); got != 4 {
		t.Errorf("registry requests = %d, want 4", got)
	}

	anon := newRemote(t, up, Options{})
	_, _, err := anon.GetManifest(t.Context(), "library/app", "1.0")
	if !errors.Is(err, ErrUnauthorized) {
		t.Errorf("without credentials: err = %v, want ErrUnauthorized", err)
	}
}

func TestWrongCredentials(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		mode authMode
	}{
		{"bearer", authBearer},
		{"basic", authBasic},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := newUpstream(t, tc.mode, false)
			up.setCredentials("alice", "right-password")
			up.seed("library/app", "1.0", randomImage(t))
			uf, pf := writeCredentials(t, "alice", "wrong-password")
			clk := newClock()
			r := newRemote(t, up, Options{Name: "dockerhub", UsernameFile: uf, PasswordFile: pf, Now: clk.Now})
			_, _, err := r.GetManifest(t.Context(), "library/app", "1.0")
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("err = %v, want ErrUnauthorized", err)
			}
			msg := err.Error()
			for _, want := range []string{"dockerhub", "401", "get manifest library/app:1.0"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
			for _, secret := range []string{"wrong-password", "Basic ", "token-"} {
				if strings.Contains(msg, secret) {
					t.Errorf("error %q contains %q", msg, secret)
				}
			}
			var se *StatusError
			if !errors.As(err, &se) || se.Status != http.StatusUnauthorized || se.Code != "UNAUTHORIZED" {
				t.Errorf("StatusError = %+v, want status 401 with code UNAUTHORIZED", se)
			}
			st := r.State()
			if !st.Available || st.Failures != 0 {
				t.Errorf("State = %+v: a refusal is not a failure of the remote", st)
			}
			if !strings.Contains(st.Refused, "401") || strings.Contains(st.Refused, "wrong-password") {
				t.Errorf("State.Refused = %q, want the refusal (401), without the password", st.Refused)
			}
			// Right credentials again: the refusal is forgotten.
			if err := os.WriteFile(pf, []byte("right-password\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			later := time.Now().Add(time.Hour)
			if err := os.Chtimes(pf, later, later); err != nil {
				t.Fatal(err)
			}
			clk.Advance(2 * time.Second)
			if _, _, err := r.GetManifest(t.Context(), "library/app", "1.0"); err != nil {
				t.Fatalf("with the right password: %v", err)
			}
			if st := r.State(); st.Refused != "" {
				t.Errorf("State.Refused = %q after an accepted call, want empty", st.Refused)
			}
		})
	}
}

func TestCredentialsFileChanged(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		mode authMode
	}{
		{"bearer", authBearer},
		{"basic", authBasic},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := newUpstream(t, tc.mode, false)
			up.setCredentials("alice", "first")
			up.seed("library/app", "1.0", randomImage(t))
			uf, pf := writeCredentials(t, "alice", "first")
			clk := newClock()
			r := newRemote(t, up, Options{UsernameFile: uf, PasswordFile: pf, Now: clk.Now})
			if _, err := r.HeadManifest(t.Context(), "library/app", "1.0"); err != nil {
				t.Fatal(err)
			}

			up.setCredentials("alice", "second")
			up.revokeTokens()
			if err := os.WriteFile(pf, []byte("second\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			// Whatever the file system's timestamp granularity, the change shows.
			later := time.Now().Add(time.Hour)
			if err := os.Chtimes(pf, later, later); err != nil {
				t.Fatal(err)
			}
			clk.Advance(2 * time.Second)
			if _, err := r.HeadManifest(t.Context(), "library/app", "1.0"); err != nil {
				t.Fatalf("after the change: %v", err)
			}
			if tc.mode == authBearer {
				if diff := cmp.Diff([]string{"alice:first", "alice:second"}, up.tokenUsers); diff != "" {
					t.Errorf("token endpoint credentials (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestCredentialsCheckedAtMostOncePerSecond(t *testing.T) {
	t.Parallel()
	uf, pf := writeCredentials(t, "alice", "first")
	clk := newClock()
	c, err := newCredentials(uf, pf, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pf, []byte("  second  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(pf, later, later); err != nil {
		t.Fatal(err)
	}
	clk.Advance(500 * time.Millisecond)
	if _, pass, gen, _ := c.get(); pass != "first" || gen != 1 {
		t.Errorf("within a second: password %q generation %d, want the old one, 1", pass, gen)
	}
	clk.Advance(600 * time.Millisecond)
	if user, pass, gen, _ := c.get(); user != "alice" || pass != "second" || gen != 2 {
		t.Errorf("after a second: %q %q generation %d, want alice second 2", user, pass, gen)
	}
	// A file that disappears keeps the last good credentials.
	if err := os.Remove(pf); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Second)
	if _, pass, gen, err := c.get(); err != nil || pass != "second" || gen != 2 {
		t.Errorf("file removed: %q generation %d err %v, want second 2 nil", pass, gen, err)
	}
}

func TestNotFound(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authBearer, false)
	up.seed("library/app", "1.0", randomImage(t))
	r := newRemote(t, up, Options{})
	missing := digest.FromString("missing")
	for _, tc := range []struct {
		name     string
		call     func(ctx context.Context) error
		wantText string
	}{
		{"manifest tag", func(ctx context.Context) error {
			_, _, err := r.GetManifest(ctx, "library/app", "nope")
			return err
		}, "MANIFEST_UNKNOWN"},
		{"head manifest", func(ctx context.Context) error {
			_, err := r.HeadManifest(ctx, "library/app", "nope")
			return err
		}, "404"},
		{"blob", func(ctx context.Context) error {
			_, _, err := r.GetBlob(ctx, "library/app", missing)
			return err
		}, "BLOB_UNKNOWN"},
		{"head blob", func(ctx context.Context) error {
			_, err := r.HeadBlob(ctx, "library/app", missing)
			return err
		}, "404"},
		{"repository", func(ctx context.Context) error {
			_, _, err := r.GetManifest(ctx, "library/none", "1.0")
			return err
		}, "library/none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(t.Context())
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("err = %v, want ErrNotFound", err)
			}
			if !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("error %q does not mention %q", err, tc.wantText)
			}
		})
	}
	if st := r.State(); st.Failures != 0 {
		t.Errorf("State = %+v: 404 is not a failure of the remote", st)
	}
}

func TestUnavailable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		fault    func(w http.ResponseWriter, r *http.Request) bool
		wantText []string
	}{
		{"429", func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("Retry-After", "17")
			writeError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", "rate limit exceeded")
			return true
		}, []string{"429", "TOOMANYREQUESTS", "retry after 17"}},
		{"503", func(w http.ResponseWriter, r *http.Request) bool {
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}, []string{"503"}},
		{"connection dropped", func(w http.ResponseWriter, r *http.Request) bool {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
			return true
		}, []string{"upstream", "get manifest library/app:1.0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := newUpstream(t, authNone, false)
			up.setFault(tc.fault)
			r := newRemote(t, up, Options{})
			_, _, err := r.GetManifest(t.Context(), "library/app", "1.0")
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("err = %v, want ErrUnavailable", err)
			}
			for _, want := range tc.wantText {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			if st := r.State(); st.Failures != 1 || !strings.HasSuffix(err.Error(), st.LastError) || st.LastError == "" {
				t.Errorf("State = %+v, want one failure with the error", st)
			}
		})
	}

	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		up := newUpstream(t, authNone, false)
		up.srv.Close()
		r := newRemote(t, up, Options{})
		if err := r.Ping(t.Context()); !errors.Is(err, ErrUnavailable) {
			t.Errorf("err = %v, want ErrUnavailable", err)
		}
	})
}

func TestCanceledContextIsNotAFailure(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authNone, false)
	r := newRemote(t, up, Options{FailureThreshold: 1})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, _, err := r.GetManifest(ctx, "library/app", "1.0")
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnavailable) {
		t.Errorf("err = %v, want context.Canceled and not ErrUnavailable", err)
	}
	if st := r.State(); !st.Available || st.Failures != 0 {
		t.Errorf("State = %+v, want available with no failures", st)
	}
}

func TestBreaker(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authNone, false)
	up.seed("library/app", "1.0", randomImage(t))
	down := func(w http.ResponseWriter, r *http.Request) bool {
		writeError(w, http.StatusBadGateway, "", "")
		return true
	}
	up.setFault(down)
	clk := newClock()
	start := clk.Now()
	r := newRemote(t, up, Options{Name: "dockerhub", FailureThreshold: 3, OpenFor: 30 * time.Second, Now: clk.Now})
	get := func() error {
		_, err := r.HeadManifest(t.Context(), "library/app", "1.0")
		return err
	}
	for i := range 3 {
		if err := get(); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("call %d: err = %v, want ErrUnavailable", i, err)
		}
		clk.Advance(time.Second)
	}
	if got := up.requests.Load(); got != 3 {
		t.Fatalf("upstream requests = %d, want 3", got)
	}
	st := r.State()
	if st.Available || st.Failures != 3 || !st.Since.Equal(start) || !strings.Contains(st.LastError, "502") {
		t.Errorf("State = %+v, want unavailable since %v after 3 failures", st, start)
	}

	// Open: calls fail at once, without reaching the upstream.
	for range 5 {
		err := get()
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("open breaker: err = %v, want ErrUnavailable", err)
		}
		for _, want := range []string{"dockerhub unavailable since 17:02:03", "3 failures", "502", "next try in 29s"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
	}
	if got := up.requests.Load(); got != 3 {
		t.Errorf("upstream requests while open = %d, want 3", got)
	}

	// Half open, the trial fails: open again for OpenFor.
	clk.Advance(30 * time.Second)
	if err := get(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("failed trial: err = %v", err)
	}
	if err := get(); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "next try in 30s") {
		t.Errorf("after the failed trial: err = %v, want the breaker open for 30s", err)
	}
	if got := up.requests.Load(); got != 4 {
		t.Errorf("upstream requests = %d, want 4 (one trial)", got)
	}

	// Half open, the trial succeeds: closed.
	up.setFault(nil)
	clk.Advance(31 * time.Second)
	if err := get(); err != nil {
		t.Fatalf("successful trial: %v", err)
	}
	if err := get(); err != nil {
		t.Fatalf("closed breaker: %v", err)
	}
	if got := up.requests.Load(); got != 6 {
		t.Errorf("upstream requests = %d, want 6", got)
	}
	st = r.State()
	if !st.Available || st.Failures != 0 || st.LastError != "" || !st.Since.Equal(clk.Now()) {
		t.Errorf("State = %+v, want available since now", st)
	}
}

func TestBreakerTrialIsSingle(t *testing.T) {
	t.Parallel()
	clk := newClock()
	b := &breaker{threshold: 1, openFor: time.Minute, now: clk.Now}
	b.done(false, true, "boom")
	if _, err := b.allow("r"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("open: err = %v", err)
	}
	clk.Advance(time.Minute)
	trial, err := b.allow("r")
	if !trial || err != nil {
		t.Fatalf("half open: trial %v err %v, want a trial", trial, err)
	}
	if _, err := b.allow("r"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("second call while the trial runs: err = %v, want ErrUnavailable", err)
	}
	b.abandon(trial)
	if trial, err := b.allow("r"); !trial || err != nil {
		t.Errorf("after an abandoned trial: trial %v err %v, want another trial", trial, err)
	}
}

func TestObserve(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authBearer, false)
	up.seed("library/app", "1.0", randomImage(t))
	var mu sync.Mutex
	var got []Request
	r := newRemote(t, up, Options{Observe: func(req Request) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, req)
	}})
	if _, err := r.HeadManifest(t.Context(), "library/app", "1.0"); err != nil {
		t.Fatal(err)
	}
	want := []Request{
		{Op: "manifest", Method: http.MethodHead, Status: http.StatusUnauthorized},
		{Op: "token", Method: http.MethodGet, Status: http.StatusOK},
		{Op: "manifest", Method: http.MethodHead, Status: http.StatusOK},
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("observed (-want +got):\n%s", diff)
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authBearer, false)
	r := newRemote(t, up, Options{})
	if err := r.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	// /v2/ is challenged without a scope: the token is asked for none.
	if diff := cmp.Diff([]string{""}, up.scopes); diff != "" {
		t.Errorf("token scopes (-want +got):\n%s", diff)
	}
}

func TestChallengeScopeIsUsed(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, authBearer, false)
	up.seed("library/app", "1.0", randomImage(t))
	up.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("Authorization") != "" {
			return false
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+up.srv.URL+`/token",service="test",scope="repository:library/app:pull repository:library/base:pull"`)
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return true
	})
	r := newRemote(t, up, Options{})
	for range 3 {
		if _, err := r.HeadManifest(t.Context(), "library/app", "1.0"); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff([]string{"repository:library/app:pull repository:library/base:pull"}, up.scopes); diff != "" {
		t.Errorf("token scopes (-want +got):\n%s", diff)
	}
}
