package admission

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/trust"
)

// ReviewAPIVersion is the apiVersion of the Review a webhook receives and
// of the Response it may answer. It changes when a field changes meaning
// or goes away; fields may be added within a version.
const ReviewAPIVersion = "admission.portcullis/v1"

// Review is the JSON body POSTed to an admission webhook for a tag push.
// It is a documented contract (README.md, "Admission webhooks"): it carries
// what the registry knows and decided, never credentials.
type Review struct {
	// APIVersion is ReviewAPIVersion.
	APIVersion string `json:"apiVersion"`
	// RequestID is the push's request id, as in the registry's logs and the
	// X-Request-Id response header.
	RequestID  string `json:"requestId,omitempty"`
	Repository string `json:"repository"`
	Tag        string `json:"tag,omitempty"`
	Digest     string `json:"digest"`
	MediaType  string `json:"mediaType"`
	// Pusher is the login of whoever pushes; empty for anonymous.
	Pusher string `json:"pusher"`
	// Verdict is the signature verdict, with every signature found; absent
	// when no trust policy applies (or verification failed in a repository
	// that does not enforce).
	Verdict *trust.Verdict `json:"verdict,omitempty"`
	// Scan is what is known of the image's vulnerability scan.
	Scan *ScanSummary `json:"scan"`
}

// Response is what a webhook answers.
type Response struct {
	// APIVersion may be left out; when set it must be ReviewAPIVersion.
	APIVersion string `json:"apiVersion,omitempty"`
	Allowed    bool   `json:"allowed"`
	Reason     string `json:"reason"`
}

// webhook calls one admission service.
type webhook struct {
	cfg    config.Webhook
	repos  policy.Patterns
	client *http.Client
}

func newWebhook(cfg config.Webhook) (*webhook, error) {
	repos, err := policy.ParsePatterns(cfg.Repositories)
	if err != nil {
		return nil, fmt.Errorf("webhook %s: repositories: %w", cfg.Name, err)
	}
	w := &webhook{cfg: cfg, repos: repos}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("webhook %s: caFile: %w", cfg.Name, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("webhook %s: caFile: no certificate in %s", cfg.Name, cfg.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	w.client = &http.Client{Transport: tr, Timeout: cfg.Timeout.D(),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return w, nil
}

// matches reports whether the webhook reviews pushes to repo: every
// repository when it lists none.
func (w *webhook) matches(repo string) bool {
	return len(w.repos) == 0 || w.repos.Match(repo)
}

// errWebhook marks a webhook that could not give an answer.
var errWebhook = errors.New("admission webhook failed")

// review asks the webhook. It returns the webhook's answer, or an error
// wrapping errWebhook when the call failed, timed out or the answer was not
// a valid response.
func (w *webhook) review(ctx context.Context, rv Review) (Response, error) {
	body, err := json.Marshal(rv)
	if err != nil {
		return Response{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout.D())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return Response{}, fmt.Errorf("%w: %v", errWebhook, err)
	}
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := w.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return Response{}, fmt.Errorf("%w: no answer within %v", errWebhook, w.cfg.Timeout.D())
		}
		return Response{}, fmt.Errorf("%w: %v", errWebhook, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Response{}, fmt.Errorf("%w: status %d after %v", errWebhook, resp.StatusCode, time.Since(start).Round(time.Millisecond))
	}
	var out Response
	dec := json.NewDecoder(io.LimitReader(resp.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		return Response{}, fmt.Errorf("%w: the answer is not a review response: %v", errWebhook, err)
	}
	if out.APIVersion != "" && out.APIVersion != ReviewAPIVersion {
		return Response{}, fmt.Errorf("%w: the answer is of apiVersion %q, want %q", errWebhook, out.APIVersion, ReviewAPIVersion)
	}
	return out, nil
}
