package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testenv"
)

// registryBin is the registry binary built once for the whole package.
var registryBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "portcullis-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	registryBin = filepath.Join(dir, "registry")
	build := exec.Command("go", "build", "-o", registryBin, "../cmd/registry")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build registry:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// toolsBin is where scripts/install-tools.sh links the pinned tools.
func toolsBin() string {
	if d := os.Getenv("PORTCULLIS_TOOLS"); d != "" {
		return filepath.Join(d, "bin")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "portcullis-tools", "bin")
}

// tool returns the path of a required tool; a missing one fails the test.
func tool(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(toolsBin(), name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("%s is required and missing: run scripts/install-tools.sh", name)
	return ""
}

// Registry is a running registry process.
type Registry struct {
	Addr    string // host:port
	DataDir string
	cmd     *exec.Cmd
	logs    *testenv.Buffer
	done    chan error
	stopped bool
}

// URL returns the base URL.
func (r *Registry) URL() string { return "http://" + r.Addr }

// Logs returns what the process wrote so far.
func (r *Registry) Logs() string { return r.logs.String() }

// freeAddr returns a free 127.0.0.1 port.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type startOptions struct {
	config  string   // YAML written to a file and passed with --config
	env     []string // extra environment
	args    []string // extra serve flags
	dataDir string   // reuse a data dir (restart); default a new temp dir
	scheme  string   // "https" when the config turns TLS on
	client  *http.Client
}

// startRegistry runs the binary and waits until it is ready. It is
// stopped with SIGTERM at cleanup, and must then exit 0.
func startRegistry(t testing.TB, o startOptions) *Registry {
	t.Helper()
	r := &Registry{Addr: freeAddr(t), DataDir: o.dataDir, logs: &testenv.Buffer{}, done: make(chan error, 1)}
	if r.DataDir == "" {
		r.DataDir = t.TempDir()
	}
	args := []string{"serve", "--addr", r.Addr, "--data", r.DataDir}
	if o.config != "" {
		f := filepath.Join(t.TempDir(), "config.yml")
		if err := os.WriteFile(f, []byte(o.config), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", f)
	}
	args = append(args, o.args...)
	r.cmd = exec.Command(registryBin, args...)
	r.cmd.Env = append(os.Environ(), o.env...)
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- r.cmd.Wait() }()
	t.Cleanup(func() {
		if !r.stopped {
			if err := r.Stop(); err != nil {
				t.Errorf("registry did not stop cleanly: %v\n%s", err, r.Logs())
			}
		}
	})
	scheme, client := o.scheme, o.client
	if scheme == "" {
		scheme = "http"
	}
	if client == nil {
		client = http.DefaultClient
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get(scheme + "://" + r.Addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r
			}
		}
		select {
		case err := <-r.done:
			r.stopped = true
			t.Fatalf("registry exited during start-up: %v\n%s", err, r.Logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry not ready after 30s: %v\n%s", err, r.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop sends SIGTERM and waits for the process; it returns an error unless
// the process exits 0 within a minute.
func (r *Registry) Stop() error {
	r.stopped = true
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case err := <-r.done:
		return err
	case <-time.After(time.Minute):
		_ = r.cmd.Process.Kill()
		return fmt.Errorf("no exit a minute after SIGTERM")
	}
}

// run runs a command with a timeout and returns its stdout; a failure fails
// the test with the command's output.
func run(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	out, err := runErr(env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return out
}

// runIn runs a command in dir, like run.
func runIn(t testing.TB, dir, name string, args ...string) string {
	t.Helper()
	out, err := runDirErr(dir, nil, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return out
}

// runErr runs a command and returns its stdout, or its whole output and the
// error.
func runErr(env []string, name string, args ...string) (string, error) {
	return runDirErr("", env, name, args...)
}

func runDirErr(dir string, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}
