package cache

import "net/http"

// Error is a failed read of a cache namespace as the client is to be told:
// an HTTP status, an OCI error code and a message that names the remote and
// what it did. Err is the cause, for the log only.
type Error struct {
	Status  int
	Code    string
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// ErrorWriter writes an error to a client in the registry's one format.
type ErrorWriter func(w http.ResponseWriter, r *http.Request, err error)

func (s *Set) writeError(w http.ResponseWriter, r *http.Request, err error) {
	s.errWriter(w, r, err)
}

// ClientError returns what the client is told.
func (e *Error) ClientError() (status int, code, message string) { return e.Status, e.Code, e.Message }
