package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// s3Logger is a reverse proxy in front of MinIO that writes one line per S3
// request (start offset, duration, method, operation, key, status, bytes) to
// a file, to see what a registry asks of the object store. It costs an extra
// copy of every byte, so timed runs go without it.
type s3Logger struct {
	endpoint string // http://127.0.0.1:PORT of the proxy
	srv      *http.Server

	mu     sync.Mutex
	out    io.Writer
	start  time.Time
	counts map[string]int
}

// startS3Logger starts a logging proxy to target on a free loopback port.
func startS3Logger(target string) (*s3Logger, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("s3 log proxy: %w", err)
	}
	l := &s3Logger{endpoint: "http://" + ln.Addr().String(), out: io.Discard}
	proxy := httputil.NewSingleHostReverseProxy(u)
	// Keep the Host header: it is part of what the client signed.
	director := proxy.Director
	proxy.Director = func(r *http.Request) { host := r.Host; director(r); r.Host = host }
	proxy.FlushInterval = -1
	l.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		begin := time.Now()
		rec := &countingWriter{ResponseWriter: w, status: http.StatusOK}
		proxy.ServeHTTP(rec, r)
		l.record(begin, r, rec)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = l.srv.Serve(ln) }()
	return l, nil
}

// to starts a new log in file, or discards the lines when file is nil; the
// counts start again from zero.
func (l *s3Logger) to(file *os.File) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.out, l.start = io.Writer(io.Discard), time.Now()
	if file != nil {
		l.out, l.counts = file, map[string]int{}
	}
}

// summary returns the request counts since to, by operation.
func (l *s3Logger) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ops := make([]string, 0, len(l.counts))
	total := 0
	for op, n := range l.counts {
		ops = append(ops, fmt.Sprintf("%s %d", op, n))
		total += n
	}
	sort.Strings(ops)
	return fmt.Sprintf("%d requests: %s", total, strings.Join(ops, ", "))
}

func (l *s3Logger) record(begin time.Time, r *http.Request, w *countingWriter) {
	op := operation(r)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts != nil {
		l.counts[op]++
	}
	fmt.Fprintf(l.out, "%9.3f %8.3fms %-6s %-22s %s %d in=%d out=%d\n",
		begin.Sub(l.start).Seconds(), float64(time.Since(begin).Microseconds())/1000,
		r.Method, op, r.URL.Path, w.status, r.ContentLength, w.n)
}

// operation names the S3 API call of r, roughly.
func operation(r *http.Request) string {
	q := r.URL.Query()
	switch {
	case r.Method == http.MethodPut && q.Has("partNumber") && r.Header.Get("X-Amz-Copy-Source") != "":
		return "UploadPartCopy"
	case r.Method == http.MethodPut && q.Has("partNumber"):
		return "UploadPart"
	case r.Method == http.MethodPut && r.Header.Get("X-Amz-Copy-Source") != "":
		return "CopyObject"
	case r.Method == http.MethodPut:
		return "PutObject"
	case r.Method == http.MethodPost && q.Has("uploads"):
		return "CreateMultipartUpload"
	case r.Method == http.MethodPost && q.Has("uploadId"):
		return "CompleteMultipartUpload"
	case r.Method == http.MethodPost && q.Has("delete"):
		return "DeleteObjects"
	case r.Method == http.MethodDelete && q.Has("uploadId"):
		return "AbortMultipartUpload"
	case r.Method == http.MethodDelete:
		return "DeleteObject"
	case r.Method == http.MethodGet && (q.Has("list-type") || q.Has("prefix") || q.Has("delimiter")):
		return "ListObjects"
	case r.Method == http.MethodGet && q.Has("uploadId"):
		return "ListParts"
	case r.Method == http.MethodGet && q.Has("uploads"):
		return "ListMultipartUploads"
	case r.Method == http.MethodGet:
		return "GetObject"
	case r.Method == http.MethodHead:
		return "HeadObject"
	}
	return r.Method
}

func (l *s3Logger) close() error { return l.srv.Close() }

// countingWriter records the status and the body bytes of a response.
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *countingWriter) WriteHeader(code int) { w.status = code; w.ResponseWriter.WriteHeader(code) }

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
