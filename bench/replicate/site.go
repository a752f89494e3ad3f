package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
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

// account is the user of site B that A's push rule and the peers copy with.
const account = "site-a"

// ruleName is the name of A's push rule.
const ruleName = "to-b"

// bench holds what every phase shares: binaries, ports, credentials and the
// clients' configuration directory.
type bench struct {
	bin            string // Portcullis
	crane, regctl  string
	work           string
	aAddr, bAddr   string // 127.0.0.1:port, the same for every pair of sites
	keyFile        string // B's token signing key
	userFile       string // A's remote credentials
	passwordFile   string
	password       string
	toolEnv        []string // HOME and DOCKER_CONFIG of crane and regctl
	storage        string
	minio          *benchproc.MinIO
	concurrency    int    // replication.concurrency at A; 0: the default
	baseline       string // the Portcullis binary of viaBase
	perfDir        string
	progress       func(string, ...any)
	pairs          int // pairs of sites started so far
	regctlPrepared bool
}

// newBench makes B's signing key, the account's password, and the clients'
// configuration (a Docker config with the account's login at B, which both
// crane and regctl read).
func newBench(ctx context.Context, b *bench) error {
	var err error
	port := func() string {
		p, e := benchproc.FreePort()
		err = errors.Join(err, e)
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	b.aAddr, b.bAddr = port(), port()
	if err != nil {
		return err
	}
	b.keyFile = filepath.Join(b.work, "b-key.pem")
	if out, err := exec.CommandContext(ctx, b.bin, "auth", "keygen", b.keyFile).CombinedOutput(); err != nil {
		return fmt.Errorf("portcullis auth keygen: %w\n%s", err, out)
	}
	pw := make([]byte, 16)
	_, _ = rand.Read(pw) // never fails on Linux
	b.password = hex.EncodeToString(pw)
	b.userFile = filepath.Join(b.work, "account.user")
	b.passwordFile = filepath.Join(b.work, "account.password")
	if err := os.WriteFile(b.userFile, []byte(account+"\n"), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(b.passwordFile, []byte(b.password+"\n"), 0o600); err != nil {
		return err
	}
	home := filepath.Join(b.work, "home")
	docker := filepath.Join(home, ".docker")
	if err := os.MkdirAll(docker, 0o700); err != nil {
		return err
	}
	auths := map[string]any{"auths": map[string]any{
		b.bAddr: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(account + ":" + b.password))},
	}}
	cfg, err := json.Marshal(auths)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(docker, "config.json"), cfg, 0o600); err != nil {
		return err
	}
	b.toolEnv = append(os.Environ(), "HOME="+home, "DOCKER_CONFIG="+docker)
	return nil
}

// site is one Portcullis process with its data directory; it can be
// stopped and started again on the same address and data.
type site struct {
	name   string
	addr   string
	dir    string // data directory (the metadata database, and the blobs on the filesystem)
	config string
	env    []string
	bin    string
	auth   bool // B: /v2/ answers 401 once ready
	bucket string
	logf   *os.File
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
}

// pair is sites A and B of one sample.
type pair struct {
	a, b *site
	m    *benchproc.MinIO
	// trash is where remove moves the data directories: deleting tens of
	// thousands of files takes minutes on a busy disk, so it is left to the
	// end of the program, after the tables.
	trash string
}

// startPair starts a fresh B and a fresh A with a push rule to it, both
// running bin.
func (b *bench) startPair(ctx context.Context, bin string) (p *pair, err error) {
	b.pairs++
	p = &pair{m: b.minio, trash: filepath.Join(b.work, "trash", strconv.Itoa(b.pairs))}
	defer func() {
		if err != nil {
			err = errors.Join(err, p.remove(context.WithoutCancel(ctx)))
			p = nil
		}
	}()
	dir := filepath.Join(b.work, fmt.Sprintf("pair-%d", b.pairs))
	if p.b, err = b.newSite(ctx, bin, dir, "b", b.bAddr, b.configB()); err != nil {
		return p, err
	}
	p.b.auth = true
	if err := p.b.start(ctx); err != nil {
		return p, err
	}
	if p.a, err = b.newSite(ctx, bin, dir, "a", b.aAddr, b.configA()); err != nil {
		return p, err
	}
	return p, p.a.start(ctx)
}

// newSite prepares a site: its data directory, its bucket on S3, its
// configuration file (storage appended to cfg) and its log file.
func (b *bench) newSite(ctx context.Context, bin, dir, name, addr, cfg string) (*site, error) {
	s := &site{name: name, addr: addr, dir: filepath.Join(dir, name), bin: bin, env: os.Environ()}
	if err := os.MkdirAll(s.dir, 0o750); err != nil {
		return s, err
	}
	if b.minio != nil {
		bucket, err := b.minio.NewBucket(ctx)
		if err != nil {
			return s, err
		}
		s.bucket = bucket
		cfg += strings.Join([]string{
			"storage:",
			"  s3:",
			"    endpoint: " + b.minio.Endpoint,
			"    region: us-east-1",
			"    bucket: " + bucket,
			"",
		}, "\n")
		s.env = append(s.env, "AWS_ACCESS_KEY_ID="+b.minio.AccessKey, "AWS_SECRET_ACCESS_KEY="+b.minio.SecretKey)
	}
	s.config = filepath.Join(dir, name+".yml")
	if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
		return s, err
	}
	var err error
	s.logf, err = os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	return s, err
}

// configB is site B's configuration: token auth with the account, which
// may pull and push everything.
func (b *bench) configB() string {
	return strings.Join([]string{
		"version: 1",
		"auth:",
		"  enabled: true",
		"  token:",
		"    signingKeyFile: " + b.keyFile,
		"  users:",
		"    - name: " + account,
		"      passwordFile: " + b.passwordFile,
		"  rules:",
		"    - name: site-a-replicates",
		"      subjects: [user:" + account + "]",
		`      repositories: ["**"]`,
		"      actions: [pull, push]",
		"",
	}, "\n")
}

// configA is site A's configuration: no auth, B as a remote with the
// account, and a push rule for repl/** (every other setting at its
// default, reconciling included).
func (b *bench) configA() string {
	lines := []string{
		"version: 1",
		"remotes:",
		"  - name: site-b",
		"    url: http://" + b.bAddr,
		"    usernameFile: " + b.userFile,
		"    passwordFile: " + b.passwordFile,
		"replication:",
	}
	if b.concurrency > 0 {
		lines = append(lines, "  concurrency: "+strconv.Itoa(b.concurrency))
	}
	lines = append(lines,
		"  rules:",
		"    - name: "+ruleName,
		"      mode: push",
		"      remote: site-b",
		`      repositories: ["repl/**"]`,
		"",
	)
	return strings.Join(lines, "\n")
}

// start runs the site's process and waits until GET /v2/ answers. If this
// program dies without stopping it, the kernel kills it.
func (s *site) start(ctx context.Context) error {
	s.cmd = exec.Command(s.bin, "serve", "--config", s.config, "--addr", s.addr, "--data", s.dir)
	s.cmd.Env = s.env
	s.cmd.Stdout, s.cmd.Stderr = s.logf, s.logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s.done = make(chan struct{})
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start site %s: %w", s.name, err)
	}
	done := s.done
	cmd := s.cmd
	go func() {
		s.err = cmd.Wait()
		close(done)
	}()
	if err := s.waitReady(ctx, time.Minute); err != nil {
		return fmt.Errorf("site %s not ready (log: %s): %w", s.name, s.logf.Name(), err)
	}
	return nil
}

func (s *site) waitReady(ctx context.Context, limit time.Duration) error {
	return benchproc.WaitHTTP(ctx, "http://"+s.addr+"/v2/", limit, func(status int) bool {
		return status == http.StatusOK || (s.auth && status == http.StatusUnauthorized)
	}, s.done, func() error { return s.err })
}

// pid is the process id of the running site.
func (s *site) pid() int { return s.cmd.Process.Pid }

// cpu is the CPU time the running site has used.
func (s *site) cpu() (time.Duration, error) { return benchproc.CPUTime(s.pid()) }

// rss is the site's resident set size now (VmRSS), in bytes.
func (s *site) rss() (int64, error) { return benchproc.ProcStatus(s.pid(), "VmRSS") }

// peak is the site's peak resident set size (VmHWM) since it started or
// since the last resetPeak, in bytes.
func (s *site) peak() (int64, error) { return benchproc.ProcStatus(s.pid(), "VmHWM") }

// resetPeak sets the site's VmHWM to its current RSS, so that peak
// measures from now on.
func (s *site) resetPeak() error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", s.pid()), []byte("5"), 0)
}

// stop ends the process (SIGTERM, then SIGKILL after 10s); it keeps the
// data. It returns an error when the process had exited by itself.
func (s *site) stop() error {
	if s == nil || s.cmd == nil {
		return nil
	}
	var err error
	select {
	case <-s.done:
		err = fmt.Errorf("site %s exited early: %v (log: %s)", s.name, s.err, s.logf.Name())
	default:
		benchproc.Terminate(s.cmd.Process, s.done)
	}
	s.cmd = nil
	return err
}

// remove stops both sites, moves their data to the trash and deletes
// their buckets.
func (p *pair) remove(ctx context.Context) error {
	var err error
	for _, s := range []*site{p.a, p.b} {
		if s == nil {
			continue
		}
		err = errors.Join(err, s.stop())
		if s.logf != nil {
			err = errors.Join(err, s.logf.Close())
		}
		if e := os.MkdirAll(p.trash, 0o750); e != nil {
			err = errors.Join(err, e)
		} else {
			err = errors.Join(err, os.Rename(s.dir, filepath.Join(p.trash, s.name)))
		}
		if s.bucket != "" {
			err = errors.Join(err, p.m.RemoveBucket(ctx, s.bucket))
		}
	}
	return err
}

// loadavg is the one-minute load average of the machine.
func loadavg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// session starts a fresh pair of sites for m, after syncing so that no sample
// pays for the writeback of the one before, with a client of each. The
// caller removes the pair and closes the clients, also on an error.
func (b *bench) session(ctx context.Context, m method) (*pair, *siteA, *siteB, error) {
	syscall.Sync()
	a, err := newSiteA(b.aAddr)
	if err != nil {
		return &pair{}, a, newSiteB(b.bAddr, b.password), err
	}
	bc := newSiteB(b.bAddr, b.password)
	bin := b.bin
	if m == viaBase {
		bin = b.baseline
	}
	p, err := b.startPair(ctx, bin)
	if p == nil {
		p = &pair{}
	}
	return p, a, bc, err
}
