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

	"github.com/portcullis/portcullis/bench/internal/benchproc"
)

// role is what a registry process does in a run.
type role string

const (
	// upstream is distribution's registry on the filesystem, seeded with
	// the image: the remote of both caches.
	upstream role = "upstream"
	// proxy is distribution's registry in proxy mode in front of upstream.
	proxy role = "proxy"
	// direct is Portcullis with no cache, the image pushed to it.
	direct role = "direct"
	// cached is Portcullis with a pull-through cache of upstream under the
	// prefix cachePrefix.
	cached role = "cache"
)

// cachePrefix is the namespace of Portcullis's cache: cachePrefix/bench/x
// is the upstream's bench/x.
const cachePrefix = "hub"

// registry is one running registry process with its own data directory.
type registry struct {
	role role
	addr string // 127.0.0.1:port
	dir  string // data directory, removed by stop
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the process has exited
	err  error         // the process's exit error, valid after done
	// idleRSS is the resident set size (VmRSS) once the registry is ready,
	// and readyCPU the CPU time it had used by then.
	idleRSS  int64
	readyCPU time.Duration
}

// binaries are the two registry programs under test.
type binaries struct {
	portcullis   string
	distribution string
}

// startRegistry starts the registry of role ro on a free loopback port with
// a fresh data directory under work, named after tag, and waits until GET
// /v2/ answers 200. A proxy or a cache fetches from upstreamAddr. The caller
// must call stop, also when startRegistry returns an error together with a
// non-nil registry.
func startRegistry(ctx context.Context, ro role, bins binaries, work, tag, upstreamAddr string) (*registry, error) {
	port, err := benchproc.FreePort()
	if err != nil {
		return nil, err
	}
	name := string(ro) + "-" + tag
	r := &registry{
		role: ro,
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
	var (
		bin  string
		args []string
		cfg  = filepath.Join(work, name+".yml")
		env  = append(os.Environ(), "OTEL_TRACES_EXPORTER=none") // else distribution exports to localhost:4318
	)
	switch ro {
	case direct:
		bin, args = bins.portcullis, []string{"serve", "--addr", r.addr, "--data", r.dir}
	case cached:
		if err := os.WriteFile(cfg, []byte(cacheConfig(upstreamAddr)), 0o600); err != nil {
			return r, fmt.Errorf("portcullis config: %w", err)
		}
		bin, args = bins.portcullis, []string{"serve", "--config", cfg, "--addr", r.addr, "--data", r.dir}
	case upstream, proxy:
		remote := ""
		if ro == proxy {
			remote = upstreamAddr
		}
		if err := os.WriteFile(cfg, []byte(distributionConfig(r.addr, r.dir, remote)), 0o600); err != nil {
			return r, fmt.Errorf("distribution config: %w", err)
		}
		bin, args = bins.distribution, []string{"serve", cfg}
	default:
		return r, fmt.Errorf("unknown role %q", ro)
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
		return r, fmt.Errorf("start %s: %w", ro, err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.done)
	}()
	if err := r.waitReady(ctx, 30*time.Second); err != nil {
		return r, fmt.Errorf("%s not ready (log: %s): %w", ro, r.log.Name(), err)
	}
	if r.idleRSS, err = benchproc.ProcStatus(r.cmd.Process.Pid, "VmRSS"); err != nil {
		return r, err
	}
	if r.readyCPU, err = benchproc.CPUTime(r.cmd.Process.Pid); err != nil {
		return r, err
	}
	return r, nil
}

// cacheConfig is Portcullis's configuration with one pull-through cache of
// the anonymous registry at upstreamAddr, every other setting at its
// default (tagTTL 5m).
func cacheConfig(upstreamAddr string) string {
	return strings.Join([]string{
		"version: 1",
		"remotes:",
		"  - name: upstream",
		"    url: http://" + upstreamAddr,
		"cache:",
		"  - prefix: " + cachePrefix,
		"    remote: upstream",
		"",
	}, "\n")
}

// distributionConfig is the smallest configuration distribution's registry
// needs on addr with filesystem storage in dir; with remoteAddr set, it is a
// pull-through proxy of the anonymous registry there.
func distributionConfig(addr, dir, remoteAddr string) string {
	lines := []string{
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
	}
	if remoteAddr != "" {
		lines = append(lines,
			"proxy:",
			"  remoteurl: http://"+remoteAddr,
		)
	}
	return strings.Join(append(lines, ""), "\n")
}

func (r *registry) waitReady(ctx context.Context, limit time.Duration) error {
	return benchproc.WaitHTTP(ctx, "http://"+r.addr+"/v2/", limit, func(status int) bool {
		return status == http.StatusOK
	}, r.done, func() error { return r.err })
}

// usage is what the kernel counted for a registry process.
type usage struct {
	peakRSS int64         // VmHWM so far, bytes
	idleRSS int64         // VmRSS once ready, bytes
	cpu     time.Duration // CPU time since it was ready
}

// usage reads the process's peak RSS so far and the CPU time it used since
// it was ready.
func (r *registry) usage() (usage, error) {
	select {
	case <-r.done:
		return usage{}, fmt.Errorf("%s exited early: %v (log: %s)", r.role, r.err, r.log.Name())
	default:
	}
	pid := r.cmd.Process.Pid
	peak, err := benchproc.ProcStatus(pid, "VmHWM")
	cpu, cpuErr := benchproc.CPUTime(pid)
	return usage{peakRSS: peak, idleRSS: r.idleRSS, cpu: cpu - r.readyCPU}, errors.Join(err, cpuErr)
}

// stop stops the process (SIGTERM, then SIGKILL after 10s) and removes its
// data directory. It reports a process that exited before it was asked to.
// It is safe to call on a registry that failed to start, and more than once.
func (r *registry) stop() (err error) {
	if r == nil {
		return nil
	}
	if r.cmd != nil && r.cmd.Process != nil {
		select {
		case <-r.done:
			err = fmt.Errorf("%s exited early: %v (log: %s)", r.role, r.err, r.log.Name())
		default:
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
		r.log = nil
	}
	if r.dir != "" {
		err = errors.Join(err, os.RemoveAll(r.dir))
		r.dir = ""
	}
	return err
}
