package front

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// barrierKey marks a context that carries a test barrier.
type barrierKey struct{}

// testBarriers counts barriers begun and waited for; each wait returns err.
type testBarriers struct {
	begun, waited int
	err           error
}

func (b *testBarriers) Barrier(ctx context.Context) (context.Context, func(context.Context) error) {
	b.begun++
	return context.WithValue(ctx, barrierKey{}, true), func(context.Context) error {
		b.waited++
		return b.err
	}
}

// TestBarrier: a write request runs with a barrier in its context and its
// success is answered once the barrier is passed; a failed barrier is a 500
// with an OCI error and none of the core's answer (no Location); refusals
// and reads wait for nothing.
func TestBarrier(t *testing.T) {
	t.Parallel()
	ns, refs, driver := memStorage(t)
	blob := digest.FromString("blob").String()
	var sawBarrier bool
	core := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawBarrier = r.Context().Value(barrierKey{}) != nil
		switch {
		case r.Method == http.MethodGet:
			_, _ = w.Write([]byte("blob"))
		case strings.HasSuffix(r.URL.Path, "/refused"):
			w.WriteHeader(http.StatusBadRequest)
		default:
			w.Header().Set("Location", "/v2/team/app/blobs/"+blob)
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte("created"))
		}
	})
	const upload = "/v2/team/app/blobs/uploads/0b6e3c1e-5a0e-4f7a-9a43-2c1f6f1a2b3c"
	for _, tt := range []struct {
		name, method, path  string
		err                 error
		wantStatus          int
		wantBegun, wantWait int
		wantBarrier         bool
	}{
		{"upload committed", http.MethodPut, upload + "?digest=" + blob, nil, http.StatusCreated, 1, 1, true},
		{"barrier failed", http.MethodPut, upload + "?digest=" + blob, errors.New("I/O error"), http.StatusInternalServerError, 1, 1, true},
		{"refused", http.MethodPatch, "/v2/team/app/blobs/uploads/refused", nil, http.StatusBadRequest, 1, 0, true},
		{"read", http.MethodGet, "/v2/team/app/blobs/" + blob, nil, http.StatusOK, 0, 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sawBarrier = false
			b := &testBarriers{err: tt.err}
			h, err := New(core, refs, ns, driver, Options{Barriers: b, Log: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			if rec.Code != tt.wantStatus || b.begun != tt.wantBegun || b.waited != tt.wantWait || sawBarrier != tt.wantBarrier {
				t.Errorf("status %d, %d barriers begun, %d waited, core saw one: %t; want %d, %d, %d, %t",
					rec.Code, b.begun, b.waited, sawBarrier, tt.wantStatus, tt.wantBegun, tt.wantWait, tt.wantBarrier)
			}
			if tt.err == nil {
				return
			}
			if loc := rec.Header().Get("Location"); loc != "" {
				t.Errorf("Location %q acknowledged a write whose barrier failed", loc)
			}
			if body := rec.Body.String(); strings.Contains(body, "created") || !strings.Contains(body, `"code":"UNKNOWN"`) {
				t.Errorf("body %q, want an OCI error and nothing of the core's answer", body)
			}
		})
	}
}
