package server

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestSlowBodyCutOff: a body that trickles in below the minimum rate is cut
// off once its grace is over; one that arrives at speed is read whole.
func TestSlowBodyCutOff(t *testing.T) {
	t.Parallel()
	got := make(chan string, 2)
	h := Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		got <- fmt.Sprintf("%d %v", len(b), err != nil)
		if err != nil {
			w.WriteHeader(http.StatusRequestTimeout)
		}
	}), Options{Log: slog.New(slog.DiscardHandler), Pace: BodyPace{MinRate: 1000, Grace: 300 * time.Millisecond}})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = 40
	fmt.Fprintf(c, "PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
	// One byte every 100 ms: 4 s for the whole body, far below 1000 B/s.
	go func() {
		for range size {
			if _, err := c.Write([]byte("a")); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	res := <-got
	if res == fmt.Sprintf("%d false", size) {
		t.Fatalf("the trickled body was read whole: %s", res)
	}
	if !strings.HasSuffix(res, "true") {
		t.Fatalf("handler result %q, want a read error", res)
	}

	body := bytes.Repeat([]byte("b"), 4<<20)
	resp, err := http.Post(srv.URL+"/y", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if res := <-got; res != fmt.Sprintf("%d false", len(body)) || resp.StatusCode != http.StatusOK {
		t.Errorf("a fast 4 MiB body: %s, status %d", res, resp.StatusCode)
	}
}

// TestLimitListener: a client address holds at most max connections; a
// further one is closed at once, and a closed one frees its slot.
func TestLimitListener(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(LimitListener(ln, 2))
	t.Cleanup(func() { srv.Close() })

	get := func(c net.Conn) error {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		return resp.Body.Close()
	}
	var conns []net.Conn
	for i := range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
		err = get(c)
		if i < 2 && err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if i == 2 && err == nil {
			t.Fatal("a third connection from one address was served")
		}
	}
	conns[0].Close()
	// The slot is freed once the server sees the close; it then serves a
	// new connection.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		err = get(c)
		c.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no slot freed after a connection closed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
