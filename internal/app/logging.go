package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/server"
	"github.com/sirupsen/logrus"
)

// NewLogger builds the process logger from the log section: JSON or text on
// w, at the configured level, with the request id of the context on every
// record. Durations are written in a human unit ("1.5s", "250ms"), never
// as bare nanoseconds. When w is a LogBuffer, each warning and error is
// flushed to its destination with the lines before it as soon as it is
// logged; info and debug lines wait for the buffer's next batch.
func NewLogger(c config.Log, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: humanDurations}
	var h slog.Handler
	switch c.Format {
	case "text":
		h = slog.NewTextHandler(w, opts)
	default:
		h = slog.NewJSONHandler(w, opts)
	}
	if b, ok := w.(*LogBuffer); ok {
		h = flushHandler{Handler: h, buf: b}
	}
	return slog.New(server.ContextHandler{Handler: h}), nil
}

// flushHandler flushes its buffer after each record of level warn and
// above, so that a warning or an error is on its way out at once.
type flushHandler struct {
	slog.Handler
	buf *LogBuffer
}

func (h flushHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		return errors.Join(err, h.buf.Flush())
	}
	return err
}

func (h flushHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return flushHandler{Handler: h.Handler.WithAttrs(attrs), buf: h.buf}
}

func (h flushHandler) WithGroup(name string) slog.Handler {
	return flushHandler{Handler: h.Handler.WithGroup(name), buf: h.buf}
}

// humanDurations writes a duration attribute as its string ("1.5s"): the
// JSON handler would write it as an integer of nanoseconds.
func humanDurations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// distributionRequestIDKey is the context key distribution reads to label its
// request loggers ("instance.id"); we store our request id under it so that
// distribution's lines carry the same id as ours.
const distributionRequestIDKey = "instance.id"

// routeDistributionLogs sends distribution's logrus output into log.
// distribution logs through the global logrus logger, so this is the one
// place that configures it. Its per-request lines duplicate our access log
// and are kept for debug level, and so are the lines of ordinary client
// errors (see distributionLevel): at info, a normal login, push and pull
// write nothing of distribution's.
func routeDistributionLogs(log *slog.Logger, debug bool) {
	std := logrus.StandardLogger()
	std.SetOutput(io.Discard)
	if debug {
		std.SetLevel(logrus.DebugLevel)
	} else {
		std.SetLevel(logrus.WarnLevel)
	}
	hooks := make(logrus.LevelHooks)
	hooks.Add(logrusHook{log: log})
	std.ReplaceHooks(hooks)
}

type logrusHook struct{ log *slog.Logger }

func (logrusHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h logrusHook) Fire(e *logrus.Entry) error {
	level := distributionLevel(e)
	ctx := e.Context
	if ctx == nil {
		// logrus entries carry no context; this adapter is where one starts.
		ctx = context.Background()
	}
	if !h.log.Enabled(ctx, level) {
		return nil
	}
	attrs := make([]slog.Attr, 0, len(e.Data)+1)
	attrs = append(attrs, slog.String("component", "distribution"))
	for k, v := range e.Data {
		switch {
		case k == distributionRequestIDKey:
			attrs = append(attrs, slog.Any("request_id", v))
		case k == "http.request.id":
			// distribution's own id for the request: the line carries
			// ours (request_id), the one in the X-Request-Id header.
		case k == "go.version", strings.Contains(strings.ToLower(k), "authorization"), strings.Contains(strings.ToLower(k), "password"):
		default:
			attrs = append(attrs, slog.Any(k, v))
		}
	}
	h.log.LogAttrs(ctx, level, e.Message, attrs...)
	return nil
}

// distributionLevel is the level a distribution line is logged at. Its
// per-request lines ("response completed") and the lines of client errors
// are debug: distribution reports every 4xx (a HEAD that finds nothing, as
// each push does) as an error, and the ordinary 401 challenge before a
// login as a warning ("error authorizing context"); our access line
// already records the status, and the audit log the refused accesses.
// Only server errors (5xx) keep their level.
func distributionLevel(e *logrus.Entry) slog.Level {
	var level slog.Level
	switch e.Level {
	case logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel:
		level = slog.LevelError
	case logrus.WarnLevel:
		level = slog.LevelWarn
	case logrus.InfoLevel:
		level = slog.LevelInfo
	default:
		level = slog.LevelDebug
	}
	if status, ok := e.Data["http.response.status"].(int); ok {
		if status < 500 {
			return slog.LevelDebug
		}
		return level
	}
	if e.Message == "response completed" || strings.HasPrefix(e.Message, "error authorizing context") {
		return slog.LevelDebug
	}
	return level
}
