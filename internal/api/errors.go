package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	dauth "github.com/distribution/distribution/v3/registry/auth"
)

// internalMessage is all a client is told of an error that is not ours to
// explain; the log has the cause under the same request id.
const internalMessage = "internal error; the request id is in the X-Request-Id header"

// StatusError is an OCI error answered with an HTTP status of our choosing,
// for the answers distribution's error codes do not carry (a 404
// UNSUPPORTED, a 413 MANIFEST_INVALID), or for an internal failure told to
// the client with a safe message. Err, when set, is the cause: it is logged,
// never sent.
type StatusError struct {
	Status  int
	Code    string
	Message string
	Err     error
}

// Status returns a StatusError without a cause.
func Status(status int, code, message string) *StatusError {
	return &StatusError{Status: status, Code: code, Message: message}
}

// Internal returns a 500 UNKNOWN StatusError that tells the client message
// and logs cause.
func Internal(message string, cause error) *StatusError {
	return &StatusError{Status: http.StatusInternalServerError, Code: errcode.ErrorCodeUnknown.String(), Message: message, Err: cause}
}

func (e *StatusError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

func (e *StatusError) Unwrap() error { return e.Err }

// WriteError answers the request with err as an OCI error body:
//   - an error with a ClientError method (a cache's) with what it returns,
//     logged when the status is 5xx;
//   - a *StatusError with its status, code and message (its cause logged);
//   - a distribution errcode error (Error, ErrorCode, Errors) with the
//     code's status, as distribution answers;
//   - an auth challenge (dauth.Challenge) with 401 UNAUTHORIZED and the
//     challenge's WWW-Authenticate header;
//   - anything else with 500 UNKNOWN and a generic message, the cause logged
//     to log (nil: not logged) with the request's context, which carries
//     the request id.
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var (
		ce clientError
		se *StatusError
		ee errcode.Error
		ec errcode.ErrorCode
		es errcode.Errors
		ch dauth.Challenge
	)
	switch {
	case errors.As(err, &ce):
		status, code, message := ce.ClientError()
		if status >= 500 {
			logError(r, log, err)
		}
		writeBody(w, status, code, message)
	case errors.As(err, &se):
		if se.Err != nil && se.Status >= 500 {
			logError(r, log, se.Err)
		}
		writeBody(w, se.Status, se.Code, se.Message)
	case errors.As(err, &ee):
		_ = errcode.ServeJSON(w, ee)
	case errors.As(err, &ec):
		_ = errcode.ServeJSON(w, ec)
	case errors.As(err, &es):
		_ = errcode.ServeJSON(w, es)
	case errors.As(err, &ch):
		ch.SetHeaders(r, w)
		_ = errcode.ServeJSON(w, errcode.ErrorCodeUnauthorized.WithMessage("authentication required: log in and retry"))
	default:
		logError(r, log, err)
		_ = errcode.ServeJSON(w, errcode.ErrorCodeUnknown.WithMessage(internalMessage))
	}
}

// clientError is an error of another package that says what the client
// is told: an HTTP status, an OCI error code and a message without secrets.
type clientError interface {
	error
	ClientError() (status int, code, message string)
}

func logError(r *http.Request, log *slog.Logger, err error) {
	if log == nil {
		return
	}
	log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
}

func writeBody(w http.ResponseWriter, status int, code, message string) {
	body, _ := json.Marshal(map[string]any{"errors": []map[string]string{{"code": code, "message": message}}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
