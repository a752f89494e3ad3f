package app

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portcullis/portcullis/config"
)

// TestDistributionLevels checks that distribution's lines of a normal push
// and pull (the 401 challenge, a HEAD that finds nothing, each request's
// completion) stay below info, and that a server error keeps its level.
func TestDistributionLevels(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		level logrus.Level
		msg   string
		data  logrus.Fields
		want  slog.Level
	}{
		{"challenge", logrus.WarnLevel, "error authorizing context: authorization token required", logrus.Fields{"http.request.uri": "/v2/"}, slog.LevelDebug},
		{"blob unknown", logrus.ErrorLevel, "response completed with error", logrus.Fields{"http.response.status": 404}, slog.LevelDebug},
		{"completed", logrus.InfoLevel, "response completed", logrus.Fields{}, slog.LevelDebug},
		{"server error", logrus.ErrorLevel, "response completed with error", logrus.Fields{"http.response.status": 500}, slog.LevelError},
		{"storage warning", logrus.WarnLevel, "storage driver failed", logrus.Fields{}, slog.LevelWarn},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := &logrus.Entry{Level: c.level, Message: c.msg, Data: c.data}
			if got := distributionLevel(e); got != c.want {
				t.Errorf("level %v, want %v", got, c.want)
			}
		})
	}
}

// TestDistributionLineOneRequestID checks that a distribution line carries
// our request id and not distribution's own.
func TestDistributionLineOneRequestID(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, err := NewLogger(config.Log{Level: "debug", Format: "json"}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	h := logrusHook{log: log}
	err = h.Fire(&logrus.Entry{Level: logrus.ErrorLevel, Message: "response completed with error", Data: logrus.Fields{
		distributionRequestIDKey: "ours", "http.request.id": "theirs", "http.response.status": 500,
		"http.request.authorization": "Bearer secret",
	}})
	if err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	if line["request_id"] != "ours" {
		t.Errorf("request_id %v, want ours", line["request_id"])
	}
	for k := range line {
		if k != "request_id" && strings.Contains(k, "request.id") || strings.Contains(k, "authorization") {
			t.Errorf("line carries %s: %s", k, buf.String())
		}
	}
}

// TestLoggerDurations checks that durations are written in a human unit.
func TestLoggerDurations(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, err := NewLogger(config.Log{Level: "info", Format: "json"}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("shutting down", "grace", 30*time.Second)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line["grace"] != "30s" {
		t.Errorf("grace %v (%T), want \"30s\"", line["grace"], line["grace"])
	}
}
