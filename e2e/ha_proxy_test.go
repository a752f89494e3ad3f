package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// haProxy is the load balancer in front of the replicas: round robin over
// the replicas whose /readyz answers 200 (checked every 200ms, as a
// Kubernetes Service follows readiness), and, as load balancers do, one
// more try on another replica when a request could not reach the one it
// was sent to: any request whose body was not read yet when the
// connection failed (nothing reached the replica), and GET and HEAD (they
// change nothing) whenever no response came back. A request whose body
// was partly sent gets 502; the client retries it.
type haProxy struct {
	transport *http.Transport
	next      atomic.Uint64
	retries   atomic.Int64 // requests sent to another replica after a failure

	mu       sync.Mutex
	backends []string // host:port of each replica, "" while it has none
	healthy  []bool
	hops     []haHop
	inflight map[*haBody]int // request bodies being forwarded -> replica
}

// haHop records which replica answered a request.
type haHop struct {
	method, path string
	replica      int
	status       int
}

func haNewProxy(n int) *haProxy {
	dialer := &net.Dialer{Timeout: time.Second}
	return &haProxy{
		transport: &http.Transport{
			DialContext:         dialer.DialContext,
			MaxIdleConnsPerHost: 32,
			IdleConnTimeout:     30 * time.Second,
		},
		backends: make([]string, n),
		healthy:  make([]bool, n),
		inflight: map[*haBody]int{},
	}
}

// set points replica i at addr (its address changes when its container
// restarts).
func (p *haProxy) set(i int, addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.backends[i] = addr
}

// isHealthy reports whether replica i is in rotation.
func (p *haProxy) isHealthy(i int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.healthy[i]
}

// check runs the readiness checks until ctx is done.
func (p *haProxy) check(ctx context.Context) {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		p.mu.Lock()
		addrs := append([]string(nil), p.backends...)
		p.mu.Unlock()
		for i, addr := range addrs {
			ok := false
			if addr != "" {
				if resp, err := client.Get("http://" + addr + "/readyz"); err == nil {
					resp.Body.Close()
					ok = resp.StatusCode == http.StatusOK
				}
			}
			p.mu.Lock()
			p.healthy[i] = ok
			p.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// pick returns the next replica in rotation not in tried; with none
// healthy, the next one not tried.
func (p *haProxy) pick(tried map[int]bool) (int, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.backends)
	start := int(p.next.Add(1))
	for _, healthyOnly := range []bool{true, false} {
		for k := range n {
			i := (start + k) % n
			if tried[i] || p.backends[i] == "" || (healthyOnly && !p.healthy[i]) {
				continue
			}
			return i, p.backends[i]
		}
	}
	return -1, ""
}

// haBody counts what the transport read of a request body.
type haBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *haBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// inflightBytes returns, for each replica, the most bytes of one request
// body being forwarded to it right now.
func (p *haProxy) inflightBytes() map[int]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[int]int64{}
	for b, i := range p.inflight {
		out[i] = max(out[i], b.n.Load())
	}
	return out
}

// takeHops returns the requests answered since the last call.
func (p *haProxy) takeHops() []haHop {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.hops
	p.hops = nil
	return h
}

// hopHeaders are the hop-by-hop headers a proxy must not forward.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func (p *haProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body := &haBody{ReadCloser: r.Body}
	idempotent := r.Method == http.MethodGet || r.Method == http.MethodHead
	tried := map[int]bool{}
	for {
		i, addr := p.pick(tried)
		if i < 0 {
			http.Error(w, "no replica answers", http.StatusBadGateway)
			return
		}
		tried[i] = true
		out := r.Clone(r.Context())
		out.RequestURI = ""
		out.URL.Scheme, out.URL.Host = "http", addr
		out.Host = r.Host // Location headers name the proxy
		for _, h := range hopHeaders {
			out.Header.Del(h)
		}
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			out.Header.Set("X-Forwarded-For", host)
		}
		out.Body = body
		if r.ContentLength == 0 {
			out.Body = nil
		}
		p.mu.Lock()
		p.inflight[body] = i
		p.mu.Unlock()
		resp, err := p.transport.RoundTrip(out)
		p.mu.Lock()
		delete(p.inflight, body)
		p.mu.Unlock()
		if err != nil {
			p.mu.Lock()
			p.healthy[i] = false // until the next check says otherwise
			p.mu.Unlock()
			if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
				return // the client went away
			}
			if idempotent || (body.n.Load() == 0 && haUnreached(err)) {
				p.retries.Add(1)
				continue
			}
			http.Error(w, "replica failed: "+err.Error(), http.StatusBadGateway)
			p.record(r, i, http.StatusBadGateway)
			return
		}
		for _, h := range hopHeaders {
			resp.Header.Del(h)
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		resp.Body.Close()
		p.record(r, i, resp.StatusCode)
		return
	}
}

func (p *haProxy) record(r *http.Request, i, status int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hops = append(p.hops, haHop{method: r.Method, path: r.URL.Path, replica: i, status: status})
}

// haUnreached reports whether err means the request never reached a
// server: no connection could be made.
func haUnreached(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH)
}
