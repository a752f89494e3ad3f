package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/portcullis/portcullis/bench/internal/benchproc"
)

// kind names one of the registries under test.
type kind string

const (
	ours     kind = "portcullis"
	upstream kind = "distribution"
	// zot is project-zot's registry, tested only when -zot names its binary.
	zot kind = "zot"
)

// Storage backends a registry can run on.
const (
	filesystem = "filesystem"
	s3         = "s3"
)

// target is one registry on one storage backend: a column of the table.
type target struct {
	kind    kind
	storage string // filesystem or s3
	// auth turns Portcullis's token auth on (with -auth only).
	auth bool
	// redirect sends blob downloads to presigned S3 URLs (on S3 only).
	redirect bool
}

func (t target) String() string {
	s := string(t.kind) + "/" + t.storage
	if t.auth {
		s += "+auth"
	}
	if t.redirect {
		s += "+redirect"
	}
	return s
}

// bucket is where a registry on S3 keeps its data: a bucket of its own on
// the MinIO server of the run.
type bucket struct {
	endpoint  string // http://127.0.0.1:PORT
	name      string
	accessKey string
	secretKey string
}

// registry is one running registry process with its own data directory.
type registry struct {
	kind kind
	addr string // 127.0.0.1:port
	dir  string // data directory, removed by stop
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the process has exited
	err  error         // the process's exit error, valid after done
	// idleRSS is the resident set size (VmRSS) once the registry is ready,
	// before the workload.
	idleRSS int64
	// auth is the client's credentials when token auth is on, else nil.
	auth authn.Authenticator
}

// startRegistry starts bin as the registry of t on a free loopback port
// with a fresh data directory under work, and waits until GET /v2/ answers
// 200 (401 with auth on). A target on S3 stores its data in b; a target with
// auth uses the key and user of a. The caller must call stop, also when
// startRegistry returns an error together with a non-nil registry.
func startRegistry(ctx context.Context, t target, bin, work string, run int, b *bucket, a *authFiles) (*registry, error) {
	k := t.kind
	port, err := benchproc.FreePort()
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("%s-%s-%d", k, t.storage, run)
	if t.auth {
		name = fmt.Sprintf("%s-%s-auth-%d", k, t.storage, run)
	}
	if t.redirect {
		name = fmt.Sprintf("%s-%s-redirect-%d", k, t.storage, run)
	}
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
	cfg := filepath.Join(work, name+".yml")
	switch {
	case k == ours && t.auth:
		if a == nil {
			return r, errors.New("auth target without a key and user")
		}
		if err := os.WriteFile(cfg, []byte(a.config()), 0o600); err != nil {
			return r, fmt.Errorf("portcullis config: %w", err)
		}
		args = []string{"serve", "--config", cfg, "--addr", r.addr, "--data", r.dir}
		r.auth = a.credentials()
	case k == ours && t.storage == filesystem:
		args = []string{"serve", "--addr", r.addr, "--data", r.dir}
	case k == ours:
		// The data directory still holds the metadata database.
		if err := os.WriteFile(cfg, []byte(oursS3Config(b, t.redirect)), 0o600); err != nil {
			return r, fmt.Errorf("portcullis config: %w", err)
		}
		args = []string{"serve", "--config", cfg, "--addr", r.addr, "--data", r.dir}
		env = append(env, "AWS_ACCESS_KEY_ID="+b.accessKey, "AWS_SECRET_ACCESS_KEY="+b.secretKey)
	case k == zot:
		cfg = filepath.Join(work, name+".json")
		if err := os.WriteFile(cfg, []byte(zotConfig(r.addr, r.dir, b)), 0o600); err != nil {
			return r, fmt.Errorf("zot config: %w", err)
		}
		args = []string{"serve", cfg}
	default:
		if err := os.WriteFile(cfg, []byte(upstreamConfig(r.addr, r.dir, b, t.redirect)), 0o600); err != nil {
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
	if r.idleRSS, err = benchproc.ProcStatus(r.cmd.Process.Pid, "VmRSS"); err != nil {
		return r, err
	}
	return r, nil
}

// oursS3Config is Portcullis's configuration for b, with every other
// setting at its default (part size 16 MiB, blobs served by the registry
// unless redirect). The credentials go in the environment.
func oursS3Config(b *bucket, redirect bool) string {
	lines := []string{
		"version: 1",
		"storage:",
		"  s3:",
		"    endpoint: " + b.endpoint,
		"    region: us-east-1",
		"    bucket: " + b.name,
	}
	if redirect {
		lines = append(lines, "    redirect: true")
	}
	return strings.Join(append(lines, ""), "\n")
}

// upstreamConfig is the smallest configuration distribution's own registry
// needs on addr, with filesystem storage in dir, or, when b is not nil,
// its s3 driver on b serving blobs itself (no redirects, as Portcullis does
// by default) or, when redirect, sending downloads to presigned URLs.
func upstreamConfig(addr, dir string, b *bucket, redirect bool) string {
	lines := []string{
		"version: 0.1",
		"log:",
		"  level: error",
		"  accesslog:",
		"    disabled: true",
		"storage:",
	}
	if b == nil {
		lines = append(lines,
			"  filesystem:",
			"    rootdirectory: "+dir,
		)
	} else {
		lines = append(lines,
			"  s3:",
			"    region: us-east-1",
			"    regionendpoint: "+b.endpoint,
			"    bucket: "+b.name,
			"    accesskey: "+b.accessKey,
			"    secretkey: "+b.secretKey,
			"    secure: false",
			"    forcepathstyle: true",
			"    v4auth: true",
			"    rootdirectory: /",
		)
		if !redirect {
			lines = append(lines,
				"  redirect:",
				"    disable: true",
			)
		}
	}
	lines = append(lines,
		"  delete:",
		"    enabled: true",
		"http:",
		"  addr: "+addr,
		"",
	)
	return strings.Join(lines, "\n")
}

func (r *registry) waitReady(ctx context.Context, limit time.Duration) error {
	// With auth on, /v2/ answers 401 and a challenge once ready.
	return benchproc.WaitHTTP(ctx, "http://"+r.addr+"/v2/", limit, func(status int) bool {
		return status == http.StatusOK || (r.auth != nil && status == http.StatusUnauthorized)
	}, r.done, func() error { return r.err })
}

// usage is what the kernel counted for a registry process over its life.
type usage struct {
	peakRSS int64 // VmHWM, bytes
	idleRSS int64 // VmRSS once ready, bytes
	cpu     time.Duration
}

// stop reads the peak RSS, stops the process (SIGTERM, then SIGKILL after
// 10s) and empties the files of its data directory. It is safe to call on a
// registry that failed to start, and more than once.
//
// The files are emptied, not deleted, until the work directory is removed at
// the end: on ext4 without a journal, every inode made in the 30 s after
// others were deleted scans past them (recently_deleted() in the inode
// allocator), so a registry started after another's tree was removed would
// pay for it, the more the more files and directories it makes. Emptying
// them gives their page cache back, as deleting did, so that the memory the
// next registry writes into is what the one before used.
func (r *registry) stop() (u usage, err error) {
	if r == nil {
		return usage{}, nil
	}
	if r.cmd != nil && r.cmd.Process != nil {
		select {
		case <-r.done:
			err = fmt.Errorf("%s exited early: %v (log: %s)", r.kind, r.err, r.log.Name())
		default:
			u.idleRSS = r.idleRSS
			u.peakRSS, err = benchproc.ProcStatus(r.cmd.Process.Pid, "VmHWM")
			cpu, cpuErr := benchproc.CPUTime(r.cmd.Process.Pid)
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
		err = errors.Join(err, emptyFiles(r.dir))
		r.dir = ""
	}
	return u, err
}

// emptyFiles truncates every regular file under dir to nothing; nothing when
// dir is missing (a registry that did not start).
func emptyFiles(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		return os.Truncate(path, 0)
	})
}
