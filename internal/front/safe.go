package front

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/portcullis/portcullis/internal/server"
)

// maxCoreErrorBody bounds the body of a registry core error kept for the log.
const maxCoreErrorBody = 4 << 10

// internalMessage is what a client is told of an internal error.
const internalMessage = "internal error; the request id is in the X-Request-Id header"

// safeCore is the registry core with its internal errors made safe: the
// core writes the cause of a 5xx (a storage path, a driver's message) into
// the response body; the client gets the error codes with a generic message
// instead, and the log gets the cause with the request id.
type safeCore struct {
	next http.Handler
	log  *slog.Logger
}

func (c safeCore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sw := &safeErrorWriter{ResponseWriter: w}
	c.next.ServeHTTP(sw, r)
	if !sw.intercepted {
		return
	}
	c.log.ErrorContext(r.Context(), "registry core error", "status", sw.status, "method", r.Method,
		"route", server.ClassifyRoute(r.URL.Path), "err", sw.body.String())
	body := safeErrorBody(sw.body.Bytes())
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(sw.status)
	_, _ = w.Write(body)
}

// safeErrorBody keeps the codes of an OCI error body and replaces every
// message and detail with internalMessage.
func safeErrorBody(orig []byte) []byte {
	var parsed struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	type entry struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	var out struct {
		Errors []entry `json:"errors"`
	}
	if json.Unmarshal(orig, &parsed) == nil {
		for _, e := range parsed.Errors {
			if e.Code != "" && len(e.Code) <= 64 {
				out.Errors = append(out.Errors, entry{Code: e.Code, Message: internalMessage})
			}
		}
	}
	if len(out.Errors) == 0 {
		out.Errors = []entry{{Code: "UNKNOWN", Message: internalMessage}}
	}
	b, _ := json.Marshal(out)
	return b
}

// safeErrorWriter holds back a 5xx response of the core.
type safeErrorWriter struct {
	http.ResponseWriter
	intercepted bool
	wrote       bool
	status      int
	body        bytes.Buffer
}

func (w *safeErrorWriter) WriteHeader(code int) {
	if w.wrote || w.intercepted {
		return
	}
	if code >= 500 {
		w.intercepted, w.status = true, code
		return
	}
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *safeErrorWriter) Write(p []byte) (int, error) {
	if !w.wrote && !w.intercepted {
		w.WriteHeader(http.StatusOK)
	}
	if w.intercepted {
		if room := maxCoreErrorBody - w.body.Len(); room > 0 {
			w.body.Write(p[:min(len(p), room)])
		}
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

// ReadFrom keeps the underlying writer's ReadFrom (sendfile for blob
// reads) for responses that are not held back.
func (w *safeErrorWriter) ReadFrom(src io.Reader) (int64, error) {
	if !w.wrote && !w.intercepted {
		w.WriteHeader(http.StatusOK)
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok && !w.intercepted {
		return rf.ReadFrom(src)
	}
	return io.Copy(writerOnly{w}, src)
}

// writerOnly hides ReadFrom, so that io.Copy does not recurse.
type writerOnly struct{ io.Writer }

func (w *safeErrorWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush forwards to the underlying writer when it flushes and the
// response is not held back.
func (w *safeErrorWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok && !w.intercepted {
		f.Flush()
	}
}
