package server

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := LimitListener(raw, 2)
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	next := func(what string) net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			return c
		case <-time.After(5 * time.Second):
			t.Fatalf("%s was not accepted", what)
			return nil
		}
	}
	dial()
	first := next("the first connection")
	dial()
	next("the second connection")

	// The third is closed by the listener: its client reads end of file.
	third := dial()
	_ = third.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := third.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("a third connection from one address: read %v, want EOF", err)
	}

	// Closing one frees its slot at once.
	first.Close()
	dial()
	next("a connection after one closed")
}

// TestPaceEndsWithTheBody: once a body has been read to its end, further
// reads do not set the deadline again: slow work after the body (a scan at
// a tag push, a webhook) is not cancelled by it.
func TestPaceEndsWithTheBody(t *testing.T) {
	t.Parallel()
	got := make(chan error, 1)
	h := Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		_, _ = r.Body.Read(make([]byte, 1)) // a read after the end
		select {
		case <-r.Context().Done():
			got <- r.Context().Err()
		case <-time.After(time.Second):
			got <- nil
		}
		w.WriteHeader(http.StatusCreated)
	}), Options{Log: slog.New(slog.DiscardHandler), Pace: BodyPace{MinRate: 1024, Grace: 200 * time.Millisecond}})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	resp, err := http.Post(srv.URL+"/v2/a/manifests/v1", "application/json", strings.NewReader(`{"schemaVersion":2}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if e := <-got; e != nil || resp.StatusCode != http.StatusCreated {
		t.Errorf("after the body was read: context %v, status %d", e, resp.StatusCode)
	}
}

// TestLimitConnReadFrom: a connection of the bounded listener copies a file
// as the TCP connection does (by its ReadFrom, which net/http uses to send a
// file with sendfile), and the peer receives every byte.
func TestLimitConnReadFrom(t *testing.T) {
	t.Parallel()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := LimitListener(raw, 2)
	t.Cleanup(func() { ln.Close() })
	want := bytes.Repeat([]byte("blob bytes "), 100000)
	file := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(file, want, 0o600); err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			sent <- err
			return
		}
		defer c.Close()
		rf, ok := c.(io.ReaderFrom)
		if !ok {
			sent <- fmt.Errorf("%T is no io.ReaderFrom", c)
			return
		}
		f, err := os.Open(file)
		if err != nil {
			sent <- err
			return
		}
		defer f.Close()
		n, err := rf.ReadFrom(f)
		if err == nil && n != int64(len(want)) {
			err = fmt.Errorf("ReadFrom copied %d bytes, want %d", n, len(want))
		}
		sent <- err
	}()
	c, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("peer received %d bytes, want the file's %d", len(got), len(want))
	}
}
