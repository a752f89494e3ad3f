package replication

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode"
)

var (
	// ErrNotFound is wrapped in the error of HeadManifest, GetManifest,
	// HeadBlob, GetBlob and Referrers when the remote answered 404 for the
	// manifest, the blob or the repository.
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized is wrapped in the error of any call when the remote
	// refused the request: 401 after the authentication flow (the remote or
	// its token service rejected the credentials, or none are configured and
	// anonymous access is not allowed), or 403.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrUnavailable is wrapped in the error of any call when the remote could
	// not be used: dial or TLS failure, timeout, a 5xx answer, 429 (rate
	// limited; the message keeps the Retry-After value), or an open circuit
	// breaker (the call was not sent; the message says since when the remote
	// is unavailable and when the next try is allowed).
	ErrUnavailable = errors.New("unavailable")
	// ErrDigestMismatch is wrapped in the error of GetManifest when the bytes
	// received do not match the digest asked for or the Docker-Content-Digest
	// header, and of HeadBlob when the header names another digest.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrDenied is wrapped in the error of a write (PutManifest, DeleteTag,
	// UploadBlob, MountBlob) when the remote refused it with 403 and the OCI
	// code DENIED: its policy (admission: no trusted signature, a scan gate,
	// a webhook; tag rules) refuses this content, and the error's message is
	// the remote's reason. Sending the same request again does not help
	// until the content or the remote's policy changes. It wraps
	// ErrUnauthorized.
	ErrDenied = fmt.Errorf("denied: %w", ErrUnauthorized)
	// ErrTooLarge is wrapped in the error of GetManifest and Referrers when a
	// manifest or a referrers page is larger than 4 MiB.
	ErrTooLarge = errors.New("too large")
)

// StatusError is an unexpected HTTP answer from the remote. It unwraps to
// ErrNotFound, ErrUnauthorized or ErrUnavailable when its status means one
// of them, so errors.Is works on it; errors.As gives the upstream's status
// and OCI error code.
type StatusError struct {
	// Remote is the remote's name in the configuration.
	Remote string
	// Op is what was asked, for example "get manifest library/alpine:3.20".
	Op string
	// Status is the HTTP status the remote answered with.
	Status int
	// Code and Message are the first OCI error the remote sent in its body,
	// if any.
	Code, Message string
	// RetryAfter is the Retry-After header of a 429 or 503 answer, if any.
	RetryAfter string

	kind error
}

// Error returns an operator-readable message: remote, what was asked, the
// status and the upstream's error code and message.
func (e *StatusError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "remote %s: %s: %d %s", e.Remote, e.Op, e.Status, http.StatusText(e.Status))
	if e.Code != "" || e.Message != "" {
		b.WriteString(" (")
		b.WriteString(e.Code)
		if e.Code != "" && e.Message != "" {
			b.WriteString(": ")
		}
		b.WriteString(e.Message)
		b.WriteString(")")
	}
	if e.RetryAfter != "" {
		fmt.Fprintf(&b, ", retry after %s", e.RetryAfter)
	}
	if e.kind != nil {
		fmt.Fprintf(&b, ": %s", e.kind)
	}
	return b.String()
}

// Unwrap returns the sentinel the status means, or nil.
func (e *StatusError) Unwrap() error { return e.kind }

// kindOf returns the sentinel an HTTP status means, or nil.
func kindOf(status int) error {
	switch {
	case status == http.StatusNotFound:
		return ErrNotFound
	case status == http.StatusUnauthorized, status == http.StatusForbidden:
		return ErrUnauthorized
	case status == http.StatusTooManyRequests, status >= 500:
		return ErrUnavailable
	}
	return nil
}

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// maxErrorText bounds the upstream's code and message kept in an error.
const maxErrorText = 200

// statusError builds the StatusError for resp and closes its body.
func (r *Remote) statusError(op string, resp *http.Response) *StatusError {
	defer resp.Body.Close()
	e := &StatusError{Remote: r.name, Op: op, Status: resp.StatusCode, kind: kindOf(resp.StatusCode)}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		e.RetryAfter = clean(resp.Header.Get("Retry-After"))
	}
	if resp.Request != nil && resp.Request.Method == http.MethodHead {
		return e
	}
	e.Code, e.Message, _ = ociError(io.LimitReader(resp.Body, maxErrorBody))
	if e.Status == http.StatusForbidden && e.Code == "DENIED" {
		e.kind = ErrDenied
	}
	return e
}

// ociError decodes the first error of an OCI error body. ok reports whether
// the body was one.
func ociError(body io.Reader) (code, message string, ok bool) {
	var v struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.NewDecoder(body).Decode(&v); err != nil || len(v.Errors) == 0 {
		return "", "", false
	}
	return clean(v.Errors[0].Code), clean(v.Errors[0].Message), true
}

// clean makes upstream text safe to show: printable, one line, bounded.
func clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > maxErrorText {
		s = strings.ToValidUTF8(s[:maxErrorText], "") + "..."
	}
	return s
}
