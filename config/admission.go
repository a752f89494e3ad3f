package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Admission configures external admission webhooks: services that see every
// tag push in matching repositories and allow or deny it.
type Admission struct {
	Webhooks []Webhook `yaml:"webhooks"`
}

// Webhook is one external admission service.
type Webhook struct {
	// Name identifies the webhook in messages and metrics.
	Name string `yaml:"name"`
	// URL receives a POST with the JSON review; http or https.
	URL string `yaml:"url"`
	// Repositories are patterns as in auth rules (team/**); empty: all.
	Repositories []string `yaml:"repositories"`
	// Timeout bounds one call; default 5s.
	Timeout Duration `yaml:"timeout"`
	// FailurePolicy is fail (default: a webhook that errs, times out or
	// answers garbage denies the push) or ignore (the push goes on).
	FailurePolicy string `yaml:"failurePolicy"`
	// CAFile is a PEM bundle trusted for an https URL.
	CAFile string `yaml:"caFile"`
	// SecretFile holds a secret shared with the webhook (its contents
	// without surrounding whitespace); when set, every review is signed
	// with it: X-Portcullis-Timestamp and X-Portcullis-Signature (HMAC-SHA256
	// of "<timestamp>.<body>"). Re-read when the file changes. Default
	// none: reviews are not signed.
	SecretFile string `yaml:"secretFile"`
	// CertFile and KeyFile are a PEM client certificate and its key that
	// the registry presents to an https URL (mutual TLS); both or neither.
	// Read again for a new connection when they change. Default none.
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
}

// Provision fills defaults.
func (a *Admission) Provision() {
	for i := range a.Webhooks {
		w := &a.Webhooks[i]
		if w.Name == "" {
			w.Name = fmt.Sprintf("webhooks[%d]", i)
		}
		if w.Timeout == 0 {
			w.Timeout = Duration(5 * time.Second)
		}
		if w.FailurePolicy == "" {
			w.FailurePolicy = "fail"
		}
	}
}

func (a *Admission) validate(bad func(key, format string, args ...any)) {
	for i, w := range a.Webhooks {
		key := fmt.Sprintf("admission.webhooks[%d]", i)
		if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(key+".url", "must be an http:// or https:// URL")
		} else if u.User != nil {
			bad(key+".url", "must not carry credentials")
		}
		if w.FailurePolicy != "fail" && w.FailurePolicy != "ignore" {
			bad(key+".failurePolicy", "must be fail or ignore, got %q", w.FailurePolicy)
		}
		if (w.CertFile == "") != (w.KeyFile == "") {
			bad(key, "certFile and keyFile must be set together")
		} else if w.CertFile != "" && !strings.HasPrefix(w.URL, "https://") {
			bad(key+".certFile", "a client certificate needs an https:// url")
		}
		if w.Timeout < 0 {
			bad(key+".timeout", "must not be negative")
		}
		checkPatterns(bad, key+".repositories", w.Repositories)
	}
}
