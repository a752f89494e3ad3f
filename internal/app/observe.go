package app

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis/portcullis/auth/audit"
	"github.com/portcullis/portcullis/auth/token"
)

// authMetrics count what the audit log records of logins and refusals,
// every event, including those the audit log's rate limit leaves out.
type authMetrics struct {
	logins  *prometheus.CounterVec
	denials *prometheus.CounterVec
}

func newAuthMetrics(reg prometheus.Registerer) (*authMetrics, error) {
	m := &authMetrics{
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_auth_logins_total",
			Help: "Logins at the token endpoint (and basic credentials on /metrics), by kind (login: a password or robot secret; refresh: a refresh token) and result (success, failure, locked: refused by the login rate limit).",
		}, []string{"kind", "result"}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_auth_denials_total",
			Help: "Authorization denials, by action (pull, push, delete, catalog, admin: a scope the token service refused; access: a request whose token was invalid or lacked the scope; tag: a tag rule's refusal).",
		}, []string{"action"}),
	}
	for _, c := range []prometheus.Collector{m.logins, m.denials} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register auth metrics: %w", err)
		}
	}
	// Every series exists from the start, at 0, so that rates and alerts
	// see the first one.
	for _, kind := range []string{"login", "refresh"} {
		for _, result := range []string{audit.ResultSuccess, audit.ResultFailure, audit.ResultLocked} {
			m.logins.WithLabelValues(kind, result)
		}
	}
	for _, action := range denialActions {
		m.denials.WithLabelValues(action)
	}
	return m, nil
}

// denialActions are the values of portcullis_auth_denials_total's action.
var denialActions = []string{"pull", "push", "delete", "catalog", "admin", "access", "tag", "other"}

// observe counts one audit event; every label value is from a fixed set.
func (m *authMetrics) observe(e audit.Event) {
	switch {
	case e.Kind == audit.KindAuthentication:
		kind := "login"
		if e.Action == "refresh" {
			kind = "refresh"
		}
		switch e.Result {
		case audit.ResultSuccess, audit.ResultFailure, audit.ResultLocked:
			m.logins.WithLabelValues(kind, e.Result).Inc()
		}
	case e.Result == audit.ResultDenied && (e.Kind == audit.KindDecision || e.Kind == audit.KindWrite):
		action := "other"
		switch {
		case slices.Contains(denialActions, e.Action):
			action = e.Action
		case e.Kind == audit.KindWrite:
			action = "tag"
		}
		m.denials.WithLabelValues(action).Inc()
	}
}

// robotExpiry exports when each robot account that expires does, read
// from storage at most once per robotListEvery (a scrape never lists the
// robots more often).
type robotExpiry struct {
	robots func() *token.Robots // the current generation's; nil: robots are off
	desc   *prometheus.Desc
	now    func() time.Time

	mu     sync.Mutex
	listed time.Time
	list   []token.Robot
	err    error
}

// robotListEvery is how long a listing of the robots is reused.
const robotListEvery = 5 * time.Minute

func newRobotExpiry(robots func() *token.Robots) *robotExpiry {
	return &robotExpiry{robots: robots, now: time.Now, desc: prometheus.NewDesc("portcullis_robot_expiry_timestamp_seconds",
		"When a robot account stops working (Unix time); robots that never expire are not listed.", []string{"robot"}, nil)}
}

func (c *robotExpiry) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *robotExpiry) Collect(ch chan<- prometheus.Metric) {
	robots := c.robots()
	if robots == nil {
		return
	}
	c.mu.Lock()
	if c.listed.IsZero() || c.now().Sub(c.listed) >= robotListEvery {
		// A scrape has no context of its own; the listing is bounded.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c.list, c.err = robots.List(ctx)
		cancel()
		c.listed = c.now()
	}
	list, err := c.list, c.err
	c.mu.Unlock()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for _, r := range list {
		if !r.ExpiresAt.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(r.ExpiresAt.Unix()), r.Name)
		}
	}
}

// certExpiry exports when the serving certificate (http.tls.certFile)
// expires, read from the file at each scrape so that a renewed file shows.
type certExpiry struct {
	file func() string // the current generation's http.tls.certFile
	desc *prometheus.Desc
}

func newCertExpiry(file func() string) *certExpiry {
	return &certExpiry{file: file, desc: prometheus.NewDesc("portcullis_tls_certificate_expiry_timestamp_seconds",
		"When the serving certificate in http.tls.certFile expires (its NotAfter, Unix time).", nil, nil)}
}

func (c *certExpiry) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *certExpiry) Collect(ch chan<- prometheus.Metric) {
	notAfter, err := leafNotAfter(c.file())
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(notAfter.Unix()))
}

// leafNotAfter returns the expiry of the first certificate in a PEM file.
func leafNotAfter(file string) (time.Time, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return time.Time{}, fmt.Errorf("http.tls.certFile: %w", err)
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return time.Time{}, errors.New("http.tls.certFile: no certificate in the file")
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return time.Time{}, fmt.Errorf("http.tls.certFile: %w", err)
		}
		return cert.NotAfter, nil
	}
}
