package main

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

// minioServer is the MinIO process that the registries on S3 share, one
// bucket per run. MinIO is AGPL: we run its binary and never import it.
type minioServer struct {
	endpoint  string // http://127.0.0.1:PORT
	accessKey string
	secretKey string
	client    *minio.Client
	cmd       *exec.Cmd
	log       *os.File
	done      chan struct{} // closed when the process has exited
	err       error         // the process's exit error, valid after done
	buckets   int
	// proxy, when set, logs the requests of the registries, which then
	// reach MinIO through it.
	proxy *s3Logger
}

// startMinIO starts bin as a single-drive MinIO server on free loopback
// ports with its data under work, and waits until it is ready. The caller
// must call stop, also when startMinIO returns an error together with a
// non-nil server.
func startMinIO(ctx context.Context, bin, work string) (*minioServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	consolePort, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	secret := make([]byte, 20)
	_, _ = rand.Read(secret) // never fails on Linux
	m := &minioServer{
		endpoint:  "http://" + addr,
		accessKey: "portcullis-bench",
		secretKey: hex.EncodeToString(secret),
		done:      make(chan struct{}),
	}
	dir := filepath.Join(work, "minio-data")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("minio data dir: %w", err)
	}
	if m.log, err = os.Create(filepath.Join(work, "minio.log")); err != nil {
		return nil, fmt.Errorf("minio log: %w", err)
	}
	m.cmd = exec.Command(bin, "server",
		"--address", addr,
		"--console-address", net.JoinHostPort("127.0.0.1", strconv.Itoa(consolePort)),
		"--quiet",
		dir)
	m.cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+m.accessKey,
		"MINIO_ROOT_PASSWORD="+m.secretKey,
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
	m.client, err = minio.New(addr, &minio.Options{
		Creds:  credentials.NewStaticV4(m.accessKey, m.secretKey, ""),
		Region: "us-east-1",
	})
	if err != nil {
		return m, fmt.Errorf("minio client: %w", err)
	}
	return m, nil
}

func (m *minioServer) waitReady(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.endpoint+"/minio/health/ready", nil)
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
		case <-m.done:
			return fmt.Errorf("exited: %v", m.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// newBucket creates an empty bucket with a name not used before on m.
func (m *minioServer) newBucket(ctx context.Context) (*bucket, error) {
	m.buckets++
	name := fmt.Sprintf("bench-%d", m.buckets)
	if err := m.client.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", name, err)
	}
	endpoint := m.endpoint
	if m.proxy != nil {
		endpoint = m.proxy.endpoint
	}
	return &bucket{endpoint: endpoint, name: name, accessKey: m.accessKey, secretKey: m.secretKey}, nil
}

// removeBucket deletes b with everything in it, so that the runs after it
// don't share the disk with its data.
func (m *minioServer) removeBucket(ctx context.Context, b *bucket) error {
	if err := m.client.RemoveBucketWithOptions(ctx, b.name, minio.RemoveBucketOptions{ForceDelete: true}); err != nil {
		return fmt.Errorf("remove bucket %s: %w", b.name, err)
	}
	return nil
}

// cpu returns the CPU time MinIO has used so far.
func (m *minioServer) cpu() (time.Duration, error) {
	return cpuTime(m.cmd.Process.Pid)
}

// stop ends MinIO (SIGTERM, then SIGKILL after 10s). It is safe to call on
// a server that failed to start.
func (m *minioServer) stop() error {
	if m == nil {
		return nil
	}
	var err error
	if m.cmd != nil && m.cmd.Process != nil {
		select {
		case <-m.done:
			err = fmt.Errorf("minio exited early: %v (log: %s)", m.err, m.log.Name())
		default:
			_ = m.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-m.done:
			case <-time.After(10 * time.Second):
				_ = m.cmd.Process.Kill()
				<-m.done
			}
		}
		m.cmd = nil
	}
	if m.log != nil {
		err = errors.Join(err, m.log.Close())
	}
	return err
}
