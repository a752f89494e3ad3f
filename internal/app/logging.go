package app

import (
	"context"
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
// record.
func NewLogger(c config.Log, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch c.Format {
	case "text":
		h = slog.NewTextHandler(w, opts)
	default:
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(server.ContextHandler{Handler: h}), nil
}

// distributionRequestIDKey is the context key distribution reads to label its
// request loggers ("instance.id"); we store our request id under it so that
// distribution's lines carry the same id as ours.
const distributionRequestIDKey = "instance.id"

// routeDistributionLogs sends distribution's logrus output into log.
// distribution logs through the global logrus logger, so this is the one
// place that configures it. Its per-request info lines duplicate our access
// log and are kept for debug level.
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
	// distribution reports every 4xx (a HEAD that finds nothing, as each
	// push does) as an error; only server errors are ours to worry about.
	if status, ok := e.Data["http.response.status"].(int); ok && status < 500 && level > slog.LevelInfo {
		level = slog.LevelInfo
	}
	attrs := make([]slog.Attr, 0, len(e.Data)+1)
	attrs = append(attrs, slog.String("component", "distribution"))
	for k, v := range e.Data {
		switch {
		case k == distributionRequestIDKey:
			attrs = append(attrs, slog.Any("request_id", v))
		case k == "go.version", strings.Contains(strings.ToLower(k), "authorization"), strings.Contains(strings.ToLower(k), "password"):
		default:
			attrs = append(attrs, slog.Any(k, v))
		}
	}
	ctx := e.Context
	if ctx == nil {
		// logrus entries carry no context; this adapter is where one starts.
		ctx = context.Background()
	}
	h.log.LogAttrs(ctx, level, e.Message, attrs...)
	return nil
}
