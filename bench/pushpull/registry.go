package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// kind names one of the two registries under test.
type kind string

const (
	ours     kind = "portcullis"
	upstream kind = "distribution"
)

// registry is one running registry process with its own data directory.
type registry struct {
	kind kind
	addr string // 127.0.0.1:port
	dir  string // data directory, removed by stop
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the process has exited
	err  error         // the process's exit error, valid after done
}

// startRegistry starts bin as a registry of kind k on a free loopback port
// with a fresh data directory under work, and waits until GET /v2/ answers
// 200. The caller must call stop, also when startRegistry returns an error
// together with a non-nil registry.
func startRegistry(ctx context.Context, k kind, bin, work string, run int) (*registry, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("%s-%d", k, run)
	r := &registry{
		kind: k,
		addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		dir:  filepath.Join(work, name),
		done: make(chan struct{}),
	}
	if err := os.MkdirAll(r.dir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	r.log, err = os.Create(filepath.Join(work, name+".log"))
	if err != nil {
		return r, fmt.Errorf("registry log: %w", err)
	}

	var args []string
	env := os.Environ()
	switch k {
	case ours:
		args = []string{"serve", "--addr", r.addr, "--data", r.dir}
	case upstream:
		cfg := filepath.Join(work, name+".yml")
		if err := os.WriteFile(cfg, []byte(upstreamConfig(r.addr, r.dir)), 0o600); err != nil {
			return r, fmt.Errorf("upstream config: %w", err)
		}
		args = []string{"serve", cfg}
		// Without this, distribution exports traces to localhost:4318.
		env = append(env, "OTEL_TRACES_EXPORTER=none")
	}
	// Not exec.CommandContext: stop must get the chance to read VmHWM
	// before the process ends; stop is deferred by every caller.
	r.cmd = exec.Command(bin, args...)
	r.cmd.Env = env
	r.cmd.Stdout = r.log
	r.cmd.Stderr = r.log
	// If this program dies without running stop, the kernel kills the registry.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		return r, fmt.Errorf("start %s: %w", k, err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.done)
	}()
	if err := r.waitReady(ctx, 30*time.Second); err != nil {
		return r, fmt.Errorf("%s not ready (log: %s): %w", k, r.log.Name(), err)
	}
	return r, nil
}

// upstreamConfig is the smallest configuration distribution's own registry
// needs for filesystem storage on addr.
func upstreamConfig(addr, dir string) string {
	return strings.Join([]string{
		"version: 0.1",
		"log:",
		"  level: error",
		"  accesslog:",
		"    disabled: true",
		"storage:",
		"  filesystem:",
		"    rootdirectory: " + dir,
		"  delete:",
		"    enabled: true",
		"http:",
		"  addr: " + addr,
		"",
	}, "\n")
}

func (r *registry) waitReady(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	url := "http://" + r.addr + "/v2/"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-r.done:
			return fmt.Errorf("exited: %v", r.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// peakRSS returns the process's peak resident set size (VmHWM) in bytes.
func (r *registry) peakRSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("read status: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "VmHWM:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse VmHWM %q: %w", rest, err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("no VmHWM in /proc status")
}

// cpuTime returns the user plus system CPU time the process has used.
func (r *registry) cpuTime() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", r.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("read stat: %w", err)
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after it. utime and stime are fields 14 and 15, in clock ticks.
	_, rest, ok := strings.Cut(string(b), ") ")
	if !ok {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	var ticks int64
	for _, s := range f[11:13] {
		t, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc stat: %w", err)
		}
		ticks += t
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, the unit of /proc CPU times: 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// usage is what the kernel counted for a registry process over its life.
type usage struct {
	peakRSS int64 // VmHWM, bytes
	cpu     time.Duration
}

// stop reads the peak RSS, stops the process (SIGTERM, then SIGKILL after
// 10s) and removes its data directory. It is safe to call on a registry that
// failed to start, and more than once.
func (r *registry) stop() (u usage, err error) {
	if r == nil {
		return usage{}, nil
	}
	if r.cmd != nil && r.cmd.Process != nil {
		select {
		case <-r.done:
			err = fmt.Errorf("%s exited early: %v (log: %s)", r.kind, r.err, r.log.Name())
		default:
			u.peakRSS, err = r.peakRSS()
			cpu, cpuErr := r.cpuTime()
			u.cpu = cpu
			err = errors.Join(err, cpuErr)
			_ = r.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-r.done:
			case <-time.After(10 * time.Second):
				_ = r.cmd.Process.Kill()
				<-r.done
			}
		}
		r.cmd = nil
	}
	if r.log != nil {
		r.log.Close()
	}
	if r.dir != "" {
		err = errors.Join(err, os.RemoveAll(r.dir))
		r.dir = ""
	}
	return u, err
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
