package replication

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Options configure a Remote. Zero values mean the defaults.
type Options struct {
	// Name is the remote's name in the configuration, used in errors, logs
	// and metrics. Required.
	Name string
	// URL is https://host[:port] or http://host[:port], without a path.
	// Required.
	URL string
	// UsernameFile and PasswordFile hold the credentials; both or neither.
	// They are re-read when either file changes (checked at most once per
	// second); their contents are trimmed of surrounding white space.
	UsernameFile, PasswordFile string
	// CAFile is a PEM bundle added to the system roots for https.
	CAFile string
	// InsecureSkipVerify turns TLS certificate verification off.
	InsecureSkipVerify bool
	// DialTimeout bounds connecting (and the TLS handshake, twice as
	// long); default 5s.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the response headers, not
	// the body; default 30s.
	ResponseHeaderTimeout time.Duration
	// FailureThreshold is the number of consecutive failed calls that opens
	// the circuit breaker; default 5.
	FailureThreshold int
	// OpenFor is how long an open breaker fails calls at once before it
	// lets one trial call through; default 30s.
	OpenFor time.Duration
	// Transport, for tests, replaces the transport built from the TLS and
	// timeout options.
	Transport http.RoundTripper
	// Observe, if set, is called once per HTTP request sent upstream, for
	// metrics. It must not block.
	Observe func(Request)
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Log receives the breaker's transitions and debug lines; default
	// discard. Credentials and tokens are never logged.
	Log *slog.Logger
}

// Request is one HTTP exchange with the remote, for metrics.
type Request struct {
	// Op is "manifest", "blob", "referrers", "tags", "catalog", "token" or
	// "ping".
	Op string
	// Method is the HTTP method.
	Method string
	// Status is the HTTP status of the answer; 0 when none came.
	Status int
	// Err is why no answer came, nil when one did.
	Err error
}

// Defaults for the zero values of Options.
const (
	defaultDialTimeout           = 5 * time.Second
	defaultResponseHeaderTimeout = 30 * time.Second
	defaultFailureThreshold      = 5
	defaultOpenFor               = 30 * time.Second
)

// Remote is a client of one remote registry: the OCI distribution API for
// reading manifests, blobs and referrers, with the registry token flow,
// credentials from files and a circuit breaker. It is safe for concurrent
// use.
type Remote struct {
	name    string
	base    string // scheme://host[:port]
	client  *http.Client
	creds   *credentials // nil: anonymous
	auth    *authState
	breaker *breaker
	observe func(Request)
	now     func() time.Time
	log     *slog.Logger
	// tokenTimeout bounds a token request, which runs detached from the
	// caller's context so that concurrent callers can share it.
	tokenTimeout time.Duration
	// chunkSize is ChunkSize, smaller in tests.
	chunkSize int64
}

// New returns a Remote for o. It fails when the name or URL is missing or
// malformed, when only one credentials file is set or either cannot be
// read, or when the CA file cannot be read or holds no certificate. It
// does not contact the remote.
func New(o Options) (*Remote, error) {
	if o.Name == "" {
		return nil, errors.New("remote: name is required")
	}
	base, err := parseBaseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("remote %s: url: %w", o.Name, err)
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = defaultDialTimeout
	}
	if o.ResponseHeaderTimeout <= 0 {
		o.ResponseHeaderTimeout = defaultResponseHeaderTimeout
	}
	if o.FailureThreshold <= 0 {
		o.FailureThreshold = defaultFailureThreshold
	}
	if o.OpenFor <= 0 {
		o.OpenFor = defaultOpenFor
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	creds, err := newCredentials(o.UsernameFile, o.PasswordFile, o.Now)
	if err != nil {
		return nil, fmt.Errorf("remote %s: %w", o.Name, err)
	}
	rt := o.Transport
	if rt == nil {
		rt, err = newTransport(o)
		if err != nil {
			return nil, fmt.Errorf("remote %s: %w", o.Name, err)
		}
	}
	r := &Remote{
		name:         o.Name,
		base:         base,
		creds:        creds,
		auth:         newAuthState(),
		breaker:      &breaker{threshold: o.FailureThreshold, openFor: o.OpenFor, now: o.Now},
		observe:      o.Observe,
		now:          o.Now,
		log:          o.Log.With("upstream", o.Name),
		tokenTimeout: o.DialTimeout + 2*o.ResponseHeaderTimeout,
		chunkSize:    ChunkSize,
	}
	r.client = &http.Client{Transport: rt, CheckRedirect: r.checkRedirect}
	return r, nil
}

// parseBaseURL checks that s is an http or https URL with a host and
// nothing after it, and returns it without a trailing slash.
func parseBaseURL(s string) (string, error) {
	if s == "" {
		return "", errors.New("required")
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%q is not a URL", s)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("%q: scheme must be http or https", s)
	case u.Host == "" || u.Hostname() == "":
		return "", fmt.Errorf("%q: host missing", s)
	case u.User != nil:
		return "", fmt.Errorf("%s://...@%s: credentials in the URL are not allowed; use usernameFile and passwordFile", u.Scheme, u.Host)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return "", fmt.Errorf("%q: must not have a path, query or fragment", s)
	}
	return u.Scheme + "://" + u.Host, nil
}

// newTransport builds the transport for o's TLS and timeout settings.
func newTransport(o Options) (*http.Transport, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.InsecureSkipVerify} //nolint:gosec // the operator's explicit choice
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate found", o.CAFile)
		}
		tlsConfig.RootCAs = pool
	}
	dialer := &net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   2 * o.DialTimeout,
		ResponseHeaderTimeout: o.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
	}, nil
}

// Name returns the remote's name in the configuration.
func (r *Remote) Name() string { return r.name }

// URL returns the remote's base URL, scheme://host[:port].
func (r *Remote) URL() string { return r.base }

// State returns the circuit breaker's view of the remote.
func (r *Remote) State() State { return r.breaker.state() }

// Ping checks that the remote answers the registry API: GET /v2/ with the
// authentication flow. It returns nil on a 2xx answer, an error wrapping
// ErrUnauthorized when the credentials are refused, ErrUnavailable when
// the remote cannot be reached, or a *StatusError.
func (r *Remote) Ping(ctx context.Context) error {
	resp, err := r.send(ctx, call{op: "ping", what: "ping", method: http.MethodGet, url: r.base + "/v2/"})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return r.statusError("ping", resp)
	}
	return nil
}

// call is one logical request to the remote.
type call struct {
	op     string // Request.Op
	what   string // what was asked, for errors
	method string
	url    string
	accept string
	scope  string // token scope; "" for none
	// A request body: content (sent again after an authentication
	// challenge) or stream (sent once), of contentType and length bytes.
	content     []byte
	stream      *oneShot
	contentType string
	length      int64
	// contentRange is the Content-Range of a chunk, start-end.
	contentRange string
}

// oneShot is a request body that can be sent once only: a blob streamed
// from its source.
type oneShot struct {
	r    io.Reader
	used bool
}

// send sends c through the breaker and the authentication flow. It returns
// the answer for any status but those that mean the remote is unavailable
// (5xx, 429), which come back as errors wrapping ErrUnavailable, as do
// transport failures. The caller closes the body.
func (r *Remote) send(ctx context.Context, c call) (*http.Response, error) {
	trial, err := r.breaker.allow(r.name)
	if err != nil {
		return nil, err
	}
	resp, err := r.sendAuthed(ctx, c)
	if err == nil && kindOf(resp.StatusCode) == ErrUnavailable {
		err = r.statusError(c.what, resp)
		resp = nil
	}
	if err != nil && ctx.Err() != nil {
		r.breaker.abandon(trial)
		return nil, err
	}
	failed := errors.Is(err, ErrUnavailable)
	msg := ""
	if failed {
		msg = strings.TrimPrefix(err.Error(), "remote "+r.name+": ")
	}
	opened, closed := r.breaker.done(trial, failed, msg)
	switch {
	case errors.Is(err, ErrUnauthorized):
		r.breaker.credentials(strings.TrimPrefix(err.Error(), "remote "+r.name+": "))
	case err == nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden):
		r.breaker.credentials(fmt.Sprintf("%s: %s", c.what, resp.Status))
	case err == nil:
		r.breaker.credentials("")
	}
	switch {
	case opened:
		r.log.WarnContext(ctx, "remote unavailable, failing calls at once", "err", err)
	case closed:
		r.log.InfoContext(ctx, "remote available again")
	}
	return resp, err
}

// roundTrip sends one HTTP request with the given Authorization header.
func (r *Remote) roundTrip(ctx context.Context, c call, authorization string) (*http.Response, error) {
	var body io.Reader
	switch {
	case c.content != nil:
		body = bytes.NewReader(c.content)
	case c.stream != nil:
		if c.stream.used {
			return nil, fmt.Errorf("remote %s: %s: the remote asked for credentials again after the body was sent: %w", r.name, c.what, ErrUnavailable)
		}
		c.stream.used = true
		body = io.NopCloser(c.stream.r)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, c.url, body)
	if err != nil {
		return nil, fmt.Errorf("remote %s: %s: %w", r.name, c.what, err)
	}
	if body != nil {
		req.ContentLength = c.length
		if c.length == 0 {
			req.Body = http.NoBody
		}
		req.Header.Set("Content-Type", c.contentType)
		if c.contentRange != "" {
			req.Header.Set("Content-Range", c.contentRange)
		}
	}
	if c.accept != "" {
		req.Header.Set("Accept", c.accept)
	}
	req.Header.Set("User-Agent", "portcullis")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := r.client.Do(req)
	if r.observe != nil {
		o := Request{Op: c.op, Method: c.method, Err: err}
		if resp != nil {
			o.Status = resp.StatusCode
		}
		r.observe(o)
	}
	if err != nil {
		return nil, r.transportError(ctx, c.what, err)
	}
	return resp, nil
}

// transportError wraps a failure to get an answer: the caller's context
// ending as itself, anything else as ErrUnavailable.
func (r *Remote) transportError(ctx context.Context, what string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("remote %s: %s: %w", r.name, what, ctxErr)
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	return fmt.Errorf("remote %s: %s: %w: %w", r.name, what, ErrUnavailable, err)
}

// drain reads a little of a body that is not used and closes it, so the
// connection can be reused.
func drain(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 4<<10))
	_ = body.Close()
}
