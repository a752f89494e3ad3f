package benchproc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// MinIO is a single-drive MinIO server process on loopback, started by
// StartMinIO, with random root credentials.
type MinIO struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	// Client is a minio-go client with the root credentials.
	Client *minio.Client

	cmd     *exec.Cmd
	log     *os.File
	done    chan struct{} // closed when the process has exited
	err     error         // the process's exit error, valid after done
	buckets int
}

// StartMinIO starts bin as a single-drive MinIO server on free loopback
// ports with its data and log under dir, and waits until it is ready. The
// caller must call Stop, also when StartMinIO returns an error together
// with a non-nil server. If this program dies without calling Stop, the
// kernel kills MinIO.
func StartMinIO(ctx context.Context, bin, dir string) (*MinIO, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	consolePort, err := FreePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	secret := make([]byte, 20)
	_, _ = rand.Read(secret) // never fails on Linux
	m := &MinIO{
		Endpoint:  "http://" + addr,
		AccessKey: "portcullis-bench",
		SecretKey: hex.EncodeToString(secret),
		done:      make(chan struct{}),
	}
	data := filepath.Join(dir, "minio-data")
	if err := os.MkdirAll(data, 0o750); err != nil {
		return nil, fmt.Errorf("minio data dir: %w", err)
	}
	if m.log, err = os.Create(filepath.Join(dir, "minio.log")); err != nil {
		return nil, fmt.Errorf("minio log: %w", err)
	}
	m.cmd = exec.Command(bin, "server",
		"--address", addr,
		"--console-address", net.JoinHostPort("127.0.0.1", strconv.Itoa(consolePort)),
		"--quiet",
		data)
	m.cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+m.AccessKey,
		"MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
	)
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		return m, fmt.Errorf("start minio: %w", err)
	}
	go func() {
		m.err = m.cmd.Wait()
		close(m.done)
	}()
	if err := m.waitReady(ctx, time.Minute); err != nil {
		return m, fmt.Errorf("minio not ready (log: %s): %w", m.log.Name(), err)
	}
	m.Client, err = minio.New(addr, &minio.Options{
		Creds:  credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""),
		Region: "us-east-1",
	})
	if err != nil {
		return m, fmt.Errorf("minio client: %w", err)
	}
	return m, nil
}

func (m *MinIO) waitReady(ctx context.Context, limit time.Duration) error {
	return WaitHTTP(ctx, m.Endpoint+"/minio/health/ready", limit,
		func(status int) bool { return status == http.StatusOK }, m.done, func() error { return m.err })
}

// Pid is the MinIO process id.
func (m *MinIO) Pid() int { return m.cmd.Process.Pid }

// NewBucket creates an empty bucket with a name not used before on m and
// returns the name.
func (m *MinIO) NewBucket(ctx context.Context) (string, error) {
	m.buckets++
	name := fmt.Sprintf("bench-%d", m.buckets)
	if err := m.Client.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
		return "", fmt.Errorf("create bucket %s: %w", name, err)
	}
	return name, nil
}

// RemoveBucket deletes the bucket name with everything in it, so that the
// runs after it don't share the disk with its data.
func (m *MinIO) RemoveBucket(ctx context.Context, name string) error {
	if err := m.Client.RemoveBucketWithOptions(ctx, name, minio.RemoveBucketOptions{ForceDelete: true}); err != nil {
		return fmt.Errorf("remove bucket %s: %w", name, err)
	}
	return nil
}

// Stop ends MinIO (SIGTERM, then SIGKILL after 10s). It is safe to call on
// a server that failed to start, and more than once; it returns an error
// when MinIO had exited before.
func (m *MinIO) Stop() error {
	if m == nil {
		return nil
	}
	var err error
	if m.cmd != nil && m.cmd.Process != nil {
		select {
		case <-m.done:
			err = fmt.Errorf("minio exited early: %v (log: %s)", m.err, m.log.Name())
		default:
			Terminate(m.cmd.Process, m.done)
		}
		m.cmd = nil
	}
	if m.log != nil {
		err = errors.Join(err, m.log.Close())
		m.log = nil
	}
	return err
}
