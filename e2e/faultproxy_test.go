package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// faultMode is what the fault proxy does to the traffic it passes on.
type faultMode int

const (
	// passThrough forwards every request unchanged.
	passThrough faultMode = iota
	// hangAfterAccept accepts connections and never reads or answers
	// them; a request on a connection accepted earlier waits until its
	// client gives up.
	hangAfterAccept
	// refuse resets every connection as soon as it is accepted, as a
	// stopped upstream does, while still counting it.
	refuse
	// resetMidBody sends the headers and the first resetAfter bytes of a
	// blob body, then resets the connection.
	resetMidBody
	// corruptBlobs flips the first byte of every blob body, keeping its
	// length.
	corruptBlobs
)

// faultProxy is an HTTP reverse proxy in front of an upstream registry. It
// counts accepted connections and requests per method and path, and can be
// switched to one fault mode at a time; a throttle applies in every mode.
type faultProxy struct {
	Addr     string // host:port the proxy listens on
	upstream *url.URL
	srv      *http.Server
	client   *http.Transport
	closed   chan struct{}

	mu         sync.Mutex
	mode       faultMode
	rate       int64 // response body bytes per second; 0: unthrottled
	upRate     int64 // request body bytes per second; 0: unthrottled
	upBytes    int64 // request body bytes passed on so far
	resetAfter int64
	accepted   int
	requests   map[string]int // "METHOD /path"
	held       []net.Conn
}

// startFaultProxy starts a proxy in front of upstream (a base URL such as
// http://127.0.0.1:5000), passing traffic through until told otherwise.
func startFaultProxy(t testing.TB, upstream string) *faultProxy {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{
		Addr:     ln.Addr().String(),
		upstream: u,
		client:   &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 64},
		closed:   make(chan struct{}),
		requests: map[string]int{},
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 30 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = p.srv.Serve(&faultListener{Listener: ln, p: p})
	}()
	t.Cleanup(func() {
		close(p.closed)
		_ = p.srv.Close()
		p.mu.Lock()
		for _, c := range p.held {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.client.CloseIdleConnections()
		<-served
	})
	return p
}

// URL returns the proxy's base URL.
func (p *faultProxy) URL() string { return "http://" + p.Addr }

// setUpstream sends the next requests to another upstream (a restarted
// registry on a new address).
func (p *faultProxy) setUpstream(t testing.TB, upstream string) {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.upstream = u
}

// setMode switches the proxy to m from the next connection or request on.
func (p *faultProxy) setMode(m faultMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = m
}

// throttle limits every response body to bytesPerSecond; 0 lifts the limit.
func (p *faultProxy) throttle(bytesPerSecond int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rate = bytesPerSecond
}

// throttleUploads limits every request body (blob uploads) to
// bytesPerSecond; 0 lifts the limit.
func (p *faultProxy) throttleUploads(bytesPerSecond int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.upRate = bytesPerSecond
}

// uploaded returns how many request body bytes the proxy passed on.
func (p *faultProxy) uploaded() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.upBytes
}

// pacedBody passes a request body on at the proxy's upload rate, counting
// what it passes.
type pacedBody struct {
	io.ReadCloser
	p     *faultProxy
	ctx   context.Context
	start time.Time
	sent  int64
}

func (b *pacedBody) Read(buf []byte) (int, error) {
	b.p.mu.Lock()
	rate := b.p.upRate
	b.p.mu.Unlock()
	if rate > 0 && len(buf) > 32<<10 {
		buf = buf[:32<<10]
	}
	n, err := b.ReadCloser.Read(buf)
	b.sent += int64(n)
	b.p.mu.Lock()
	b.p.upBytes += int64(n)
	b.p.mu.Unlock()
	if rate > 0 && n > 0 {
		due := time.Duration(float64(b.sent) / float64(rate) * float64(time.Second))
		if wait := due - time.Since(b.start); wait > 0 {
			select {
			case <-time.After(wait): // pacing the stream, not synchronising
			case <-b.ctx.Done():
			}
		}
	}
	return n, err
}

// resetBlobsAfter switches to resetMidBody, cutting blob bodies after n bytes.
func (p *faultProxy) resetBlobsAfter(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode, p.resetAfter = resetMidBody, n
}

// acceptedConns returns how many connections the proxy accepted so far.
func (p *faultProxy) acceptedConns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// count returns how many requests with method had a path containing part;
// method "" counts every method.
func (p *faultProxy) count(method, part string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for k, v := range p.requests {
		m, path, _ := strings.Cut(k, " ")
		if (method == "" || m == method) && strings.Contains(path, part) {
			n += v
		}
	}
	return n
}

// total returns how many requests reached the proxy.
func (p *faultProxy) total() int { return p.count("", "") }

// blobGets returns how many GETs of blob d reached the proxy.
func (p *faultProxy) blobGets(d string) int { return p.count(http.MethodGet, "/blobs/"+d) }

// snapshot returns the request counts so far, for requestsSince.
func (p *faultProxy) snapshot() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.requests)
}

// requestsSince lists the requests counted after snapshot s, for failure
// messages.
func (p *faultProxy) requestsSince(s map[string]int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var lines []string
	for k, v := range p.requests {
		if d := v - s[k]; d > 0 {
			lines = append(lines, fmt.Sprintf("%s ×%d", k, d))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// requestLog returns the counted requests, for failure messages.
func (p *faultProxy) requestLog() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for k, v := range p.requests {
		b.WriteString(k)
		b.WriteString(" ×")
		b.WriteString(strings.Repeat("|", min(v, 60)))
		b.WriteString("\n")
	}
	return b.String()
}

// faultListener applies the connection-level modes as connections arrive.
type faultListener struct {
	net.Listener
	p *faultProxy
}

// Accept counts every connection and returns those the mode lets through:
// it holds them (hangAfterAccept) or resets them (refuse) otherwise.
func (l *faultListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.p.mu.Lock()
		l.p.accepted++
		mode := l.p.mode
		if mode == hangAfterAccept {
			l.p.held = append(l.p.held, c)
		}
		l.p.mu.Unlock()
		switch mode {
		case hangAfterAccept:
			continue
		case refuse:
			resetConn(c)
			continue
		}
		return c, nil
	}
}

// resetConn closes c with a TCP reset rather than an orderly shutdown.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// ServeHTTP counts the request and forwards it to the upstream, applying
// the mode and the throttle to the response.
func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.requests[r.Method+" "+r.URL.Path]++
	mode, rate, resetAfter, upstream := p.mode, p.rate, p.resetAfter, p.upstream
	p.mu.Unlock()

	switch mode {
	case hangAfterAccept:
		select {
		case <-r.Context().Done():
		case <-p.closed:
		}
		return
	case refuse:
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			resetConn(c)
		}
		return
	}

	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = upstream.Scheme, upstream.Host
	// The upstream builds absolute URLs (upload locations) from Host: keep
	// the proxy's, so that everything comes back through it.
	out.Host = r.Host
	if r.ContentLength == 0 {
		out.Body = nil
	} else {
		out.Body = &pacedBody{ReadCloser: r.Body, p: p, ctx: r.Context(), start: time.Now()}
	}
	resp, err := p.client.RoundTrip(out)
	if err != nil {
		http.Error(w, "fault proxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)

	blob := r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") && resp.StatusCode == http.StatusOK
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	var sent int64
	start := time.Now()
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if blob && mode == corruptBlobs && sent == 0 {
				chunk[0] ^= 0xff
			}
			if blob && mode == resetMidBody && sent+int64(n) > resetAfter {
				_, _ = w.Write(chunk[:resetAfter-sent])
				_ = rc.Flush()
				if c, _, err := rc.Hijack(); err == nil {
					resetConn(c)
					return
				}
				panic(http.ErrAbortHandler)
			}
			if _, werr := w.Write(chunk); werr != nil {
				return
			}
			_ = rc.Flush()
			sent += int64(n)
			if rate > 0 {
				due := time.Duration(float64(sent) / float64(rate) * float64(time.Second))
				if wait := due - time.Since(start); wait > 0 {
					select {
					case <-time.After(wait): // pacing the stream, not synchronising
					case <-r.Context().Done():
						return
					}
				}
			}
		}
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			// The upstream broke off: so does the proxy.
			panic(http.ErrAbortHandler)
		}
	}
}
