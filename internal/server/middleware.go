package server

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
)

// Options configures Wrap.
type Options struct {
	// Log receives access lines and recovered panics.
	Log *slog.Logger
	// Metrics records request metrics; nil disables them.
	Metrics *Metrics
	// AccessLog writes one line per request.
	AccessLog bool
	// Pace bounds how slowly request bodies may arrive.
	Pace BodyPace
}

// Wrap returns next behind request ids, panic recovery, metrics and access
// logging.
func Wrap(next http.Handler, o Options) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID(id) {
			id = newRequestID()
		}
		ctx := WithRequestID(r.Context(), id)
		w.Header().Set(RequestIDHeader, id)
		route := ClassifyRoute(r.URL.Path)
		method := methodLabel(r.Method)

		rec := &responseRecorder{ResponseWriter: w}
		var body *countingBody
		if r.Body != nil && r.Body != http.NoBody {
			var rd io.ReadCloser = r.Body
			if o.Pace.MinRate > 0 {
				rd = &pacedBody{ReadCloser: rd, rc: http.NewResponseController(w), pace: o.Pace, start: start}
			}
			body = &countingBody{ReadCloser: rd}
			r.Body = body
		}
		upload := route == RouteBlobUpload && r.Method != http.MethodGet && r.Method != http.MethodHead
		if o.Metrics != nil {
			o.Metrics.inFlight.Inc()
			if upload {
				o.Metrics.uploadsInFlight.Inc()
			}
		}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler { //nolint:errorlint // sentinel panic value, compared as net/http does
					panic(p)
				}
				o.Log.ErrorContext(ctx, "panic serving request", "err", fmt.Sprint(p), "stack", string(debug.Stack()))
				if rec.status == 0 {
					_ = errcode.ServeJSON(rec, errcode.ErrorCodeUnknown.WithMessage("internal error; the request id is in the X-Request-Id header"))
				}
			}
			code := rec.statusCode()
			var in int64
			if body != nil {
				in = body.n
			}
			elapsed := time.Since(start)
			if o.Metrics != nil {
				o.Metrics.inFlight.Dec()
				if upload {
					o.Metrics.uploadsInFlight.Dec()
				}
				o.Metrics.requests.WithLabelValues(method, route, codeLabel(code)).Inc()
				o.Metrics.duration.WithLabelValues(method, route).Observe(elapsed.Seconds())
				o.Metrics.bytesIn.WithLabelValues(route).Add(float64(in))
				o.Metrics.bytesOut.WithLabelValues(route).Add(float64(rec.written))
			}
			if o.AccessLog && route != RouteMetrics && route != RouteHealth {
				o.Log.LogAttrs(ctx, slog.LevelInfo, "request",
					slog.String("method", r.Method),
					slog.String("path", r.URL.Path),
					slog.String("route", route),
					slog.Int("status", code),
					slog.Int64("bytes_in", in),
					slog.Int64("bytes_out", rec.written),
					slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
					slog.String("remote", r.RemoteAddr),
					slog.String("user_agent", r.UserAgent()),
				)
			}
		}()
		next.ServeHTTP(rec, r.WithContext(ctx))
	})
}

// ErrShutdown is returned by a server's Run when it stopped because its
// context was cancelled and the grace period ran out before requests finished.
var ErrShutdown = errors.New("shutdown grace period expired with requests in flight")
