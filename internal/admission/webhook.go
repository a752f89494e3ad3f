package admission

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
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

// The headers that sign a review when the webhook has a secretFile: the
// timestamp in unix seconds, and "sha256=" and the hex HMAC-SHA256, keyed
// with the secret, of the timestamp, a dot and the exact body.
const (
	TimestampHeader = "X-Portcullis-Timestamp"
	SignatureHeader = "X-Portcullis-Signature"
)

// Sign returns the SignatureHeader value of a review body sent at the
// timestamp (unix seconds) with secret.
func Sign(secret []byte, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// webhook calls one admission service.
type webhook struct {
	cfg    config.Webhook
	repos  policy.Patterns
	client *http.Client
	secret *secretFile // nil: reviews are not signed
	log    *slog.Logger
	now    func() time.Time
}

func newWebhook(cfg config.Webhook, log *slog.Logger) (*webhook, error) {
	repos, err := policy.ParsePatterns(cfg.Repositories)
	if err != nil {
		return nil, fmt.Errorf("webhook %s: repositories: %w", cfg.Name, err)
	}
	w := &webhook{cfg: cfg, repos: repos, log: log, now: time.Now}
	if cfg.SecretFile != "" {
		if w.secret, err = newSecretFile(cfg.SecretFile); err != nil {
			return nil, fmt.Errorf("webhook %s: secretFile: %w", cfg.Name, err)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CAFile != "" || cfg.CertFile != "" {
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("webhook %s: caFile: %w", cfg.Name, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("webhook %s: caFile: no certificate in %s", cfg.Name, cfg.CAFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	if cfg.CertFile != "" {
		kp, err := newKeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("webhook %s: certFile and keyFile: %w", cfg.Name, err)
		}
		tr.TLSClientConfig.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, err := kp.get()
			if err != nil {
				log.WarnContext(cri.Context(), "admission webhook client certificate changed but could not be loaded; presenting the last one",
					"webhook", cfg.Name, "err", err)
			}
			return cert, nil
		}
	}
	w.client = &http.Client{Transport: tr, Timeout: cfg.Timeout.D(),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return w, nil
}

// secretFile is a shared secret read from a file, read again when the
// file's modification time or size changes. When the file cannot be read
// again (removed while a new one is written), the last secret is kept.
type secretFile struct {
	path string

	mu     sync.Mutex
	mod    time.Time
	size   int64
	secret []byte
}

func newSecretFile(path string) (*secretFile, error) {
	s := &secretFile{path: path}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// load reads the file; the caller holds mu or owns s.
func (s *secretFile) load() error {
	fi, err := os.Stat(s.path)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(s.path)
	if err != nil {
		return err
	}
	secret := bytes.TrimSpace(b)
	if len(secret) == 0 {
		return fmt.Errorf("%s is empty", s.path)
	}
	s.secret, s.mod, s.size = secret, fi.ModTime(), fi.Size()
	return nil
}

// get returns the current secret, and an error when the file changed but
// could not be read again (the last secret is returned with it).
func (s *secretFile) get() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := os.Stat(s.path)
	if err == nil && fi.ModTime().Equal(s.mod) && fi.Size() == s.size {
		return s.secret, nil
	}
	if err == nil {
		err = s.load()
	}
	return s.secret, err
}

// keyPair is a client certificate and key read from files, read again
// for a new connection when either file's modification time or size
// changed. When they cannot be loaded again (one written, not yet the
// other), the last pair is kept.
type keyPair struct {
	certFile, keyFile string

	mu    sync.Mutex
	stamp string
	cert  *tls.Certificate
}

func newKeyPair(certFile, keyFile string) (*keyPair, error) {
	k := &keyPair{certFile: certFile, keyFile: keyFile}
	stamp, err := k.stat()
	if err != nil {
		return nil, err
	}
	if err := k.load(stamp); err != nil {
		return nil, err
	}
	return k, nil
}

// stat returns what identifies the files' versions.
func (k *keyPair) stat() (string, error) {
	var stamp strings.Builder
	for _, f := range []string{k.certFile, k.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&stamp, "%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return stamp.String(), nil
}

// load reads the pair; the caller holds mu or owns k.
func (k *keyPair) load(stamp string) error {
	cert, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		return err
	}
	k.cert, k.stamp = &cert, stamp
	return nil
}

// get returns the current pair, and an error when the files changed but
// could not be loaded again (the last pair is returned with it).
func (k *keyPair) get() (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	stamp, err := k.stat()
	if err == nil && stamp == k.stamp {
		return k.cert, nil
	}
	if err == nil {
		err = k.load(stamp)
	}
	return k.cert, err
}

// matches reports whether the webhook reviews pushes to repo: every
// repository when it lists none.
func (w *webhook) matches(repo string) bool {
	return len(w.repos) == 0 || w.repos.Match(repo)
}

// errWebhook marks a webhook that could not give an answer.
var errWebhook = errors.New("admission webhook failed")

// maxSnippet bounds the part of a webhook's answer that is logged.
const maxSnippet = 200

// failure is a webhook that could not give an answer. Its Error is the
// cause, safe to tell the pusher: it names the webhook's URL without query
// and never quotes the answer's body; detail, when set, is a bounded and
// sanitized snippet of that body, and err the error, for the log only.
type failure struct {
	cause  string
	detail string
	err    error
}

func (f *failure) Error() string { return f.cause }

// Is makes a failure match errWebhook.
func (f *failure) Is(target error) bool { return target == errWebhook }

func (f *failure) Unwrap() error { return f.err }

// failureAttrs are a webhook error's details for the log.
func failureAttrs(err error) []any {
	var f *failure
	if !errors.As(err, &f) {
		return []any{"err", err}
	}
	return f.logAttrs()
}

// logAttrs are the failure's details for the log.
func (f *failure) logAttrs() []any {
	attrs := []any{"cause", f.cause}
	if f.err != nil {
		attrs = append(attrs, "err", f.err)
	}
	if f.detail != "" {
		attrs = append(attrs, "answer", f.detail)
	}
	return attrs
}

// invalid is the failure of an answer that is not a review response.
func invalid(format string, args ...any) *failure {
	return &failure{cause: "answered with an invalid response: " + oneLine(fmt.Sprintf(format, args...))}
}

// safeURL is the webhook's URL without credentials, query or fragment.
func (w *webhook) safeURL() string {
	u, err := url.Parse(w.cfg.URL)
	if err != nil {
		return "its URL"
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return u.String()
}

// review asks the webhook. It returns the webhook's answer, or a *failure
// (matching errWebhook) when the call failed, timed out or the answer was
// not a valid response: no "allowed" field, an unknown field, another
// apiVersion.
func (w *webhook) review(ctx context.Context, rv Review) (Response, error) {
	body, err := json.Marshal(rv)
	if err != nil {
		return Response{}, err
	}
	timeout := w.cfg.Timeout.D()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return Response{}, &failure{cause: "its URL is not usable", err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	if w.secret != nil {
		secret, err := w.secret.get()
		if err != nil {
			w.log.WarnContext(ctx, "admission webhook secret file changed but could not be read; signing with the last secret",
				"webhook", w.cfg.Name, "err", err)
		}
		ts := strconv.FormatInt(w.now().Unix(), 10)
		req.Header.Set(TimestampHeader, ts)
		req.Header.Set(SignatureHeader, Sign(secret, ts, body))
	}
	timedOut := func(err error) bool {
		var ne net.Error
		return ctx.Err() == nil && (errors.Is(cctx.Err(), context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		switch {
		case timedOut(err):
			return Response{}, &failure{cause: "timed out after " + timeout.String(), err: err}
		case ctx.Err() != nil:
			return Response{}, &failure{cause: "the push was cancelled", err: err}
		}
		cause := err
		var ue *url.Error
		if errors.As(err, &ue) {
			// The log gets the URL without its query either.
			ue.URL, cause = w.safeURL(), ue.Err
		}
		return Response{}, &failure{cause: oneLine(fmt.Sprintf("%s could not be reached: %v", w.safeURL(), cause)), err: err}
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		if timedOut(err) {
			return Response{}, &failure{cause: "timed out after " + timeout.String(), err: err}
		}
		return Response{}, &failure{cause: "its answer could not be read", err: err}
	}
	if resp.StatusCode != http.StatusOK {
		return Response{}, &failure{cause: fmt.Sprintf("answered HTTP %d", resp.StatusCode), detail: snippet(answer)}
	}
	if len(answer) > maxAnswer {
		return Response{}, invalid("larger than %d bytes", maxAnswer)
	}
	var out struct {
		APIVersion string  `json:"apiVersion"`
		Allowed    *bool   `json:"allowed"`
		Reason     *string `json:"reason"`
	}
	if len(bytes.TrimSpace(answer)) == 0 {
		return Response{}, invalid("an empty body")
	}
	dec := json.NewDecoder(bytes.NewReader(answer))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		var f *failure
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te) && te.Field == "":
			f = invalid("a JSON %s, not an object", te.Value)
		case errors.As(err, &te):
			f = invalid("%q is a JSON %s", te.Field, te.Value)
		default:
			f = invalid("%s", strings.TrimPrefix(err.Error(), "json: "))
		}
		f.detail, f.err = snippet(answer), err
		return Response{}, f
	}
	if out.APIVersion != "" && out.APIVersion != ReviewAPIVersion {
		return Response{}, invalid("apiVersion %q, want %q", out.APIVersion, ReviewAPIVersion)
	}
	if out.Allowed == nil {
		return Response{}, invalid("no %q field", "allowed")
	}
	r := Response{APIVersion: out.APIVersion, Allowed: *out.Allowed}
	if out.Reason != nil {
		r.Reason = *out.Reason
	}
	return r, nil
}

// maxAnswer bounds a webhook's answer.
const maxAnswer = 64 << 10

// snippet returns the start of a webhook's answer for the log: printable
// ASCII only, at most maxSnippet bytes.
func snippet(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		if sb.Len() >= maxSnippet {
			sb.WriteString("...")
			break
		}
		if c < 0x20 || c > 0x7e {
			c = '.'
		}
		sb.WriteByte(c)
	}
	return sb.String()
}

// CheckWebhooks builds each configured webhook as the gate does, reading
// its secret, CA and client certificate files, and returns every problem,
// joined. It calls no webhook.
func CheckWebhooks(cfgs []config.Webhook) error {
	var errs []error
	for _, wc := range cfgs {
		if _, err := newWebhook(wc, slog.New(slog.DiscardHandler)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
