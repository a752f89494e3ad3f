package storage

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/storage/miniotest"
)

// TestNewFailures checks that New names each broken setting in one line that
// wraps the matching sentinel and never shows the secret key.
func TestNewFailures(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	bucket := srv.NewBucket(t)

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadEndpoint := "http://" + closed.Addr().String()
	closed.Close()

	good := Options{Endpoint: srv.Endpoint, Bucket: bucket, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey}
	const wrongSecret = "wrong-secret-value-1234"
	tests := []struct {
		name   string
		modify func(*Options)
		is     error
		want   []string // substrings of the message
	}{
		{
			name:   "wrong secret key",
			modify: func(o *Options) { o.SecretKey = wrongSecret },
			is:     ErrBadCredentials,
			want:   []string{srv.Endpoint, bucket, "credentials rejected", srv.AccessKey},
		},
		{
			name:   "unknown access key",
			modify: func(o *Options) { o.AccessKey, o.SecretKey = "nobody", wrongSecret },
			is:     ErrBadCredentials,
			want:   []string{"credentials rejected", `"nobody"`},
		},
		{
			name:   "wrong secret key with region",
			modify: func(o *Options) { o.SecretKey, o.Region = wrongSecret, "us-east-1" },
			is:     ErrBadCredentials,
			want:   []string{"credentials rejected"},
		},
		{
			name:   "missing bucket",
			modify: func(o *Options) { o.Bucket = "no-such-bucket" },
			is:     ErrBucketNotFound,
			want:   []string{`bucket "no-such-bucket": bucket not found`},
		},
		{
			name:   "missing bucket with region",
			modify: func(o *Options) { o.Bucket, o.Region = "no-such-bucket", "us-east-1" },
			is:     ErrBucketNotFound,
			want:   []string{"bucket not found"},
		},
		{
			name:   "unreachable endpoint",
			modify: func(o *Options) { o.Endpoint, o.SecretKey = deadEndpoint, wrongSecret },
			is:     ErrUnreachable,
			want:   []string{deadEndpoint, "endpoint unreachable", "connection refused"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := good
			tt.modify(&o)
			start := time.Now()
			d, err := New(t.Context(), o)
			if err == nil {
				t.Fatalf("New succeeded: %v", d)
			}
			if time.Since(start) > 5*time.Second {
				t.Errorf("New took %s to fail", time.Since(start))
			}
			msg := err.Error()
			t.Logf("error: %s", msg)
			if !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(err, %v) = false", tt.is)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q", w)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans several lines")
			}
			for _, secret := range []string{o.SecretKey, srv.SecretKey} {
				if strings.Contains(msg, secret) {
					t.Errorf("error shows a secret key")
				}
			}
		})
	}
}

func TestNewOptions(t *testing.T) {
	t.Parallel()
	const secret = "super-secret-do-not-print"
	tests := []struct {
		name string
		o    Options
		want []string
	}{
		{name: "empty", o: Options{}, want: []string{"endpoint: required", "bucket: required"}},
		{
			name: "secret without key",
			o:    Options{Endpoint: "http://h:9000", Bucket: "b", SecretKey: secret},
			want: []string{"accessKey and secretKey: set both or neither"},
		},
		{
			name: "credentials in the URL",
			o:    Options{Endpoint: "http://user:" + secret + "@h:9000", Bucket: "b"},
			want: []string{"must not contain credentials"},
		},
		{
			name: "scheme",
			o:    Options{Endpoint: "ftp://h", Bucket: "b"},
			want: []string{"scheme must be http or https"},
		},
		{
			name: "path",
			o:    Options{Endpoint: "http://h/x", Bucket: "b"},
			want: []string{"must have no path"},
		},
		{
			name: "part size",
			o:    Options{Endpoint: "http://h", Bucket: "b", PartSize: 1 << 20},
			want: []string{"partSize: 1048576 is outside"},
		},
		{
			name: "concurrency",
			o:    Options{Endpoint: "http://h", Bucket: "b", Concurrency: -1},
			want: []string{"concurrency: -1 is outside"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(t.Context(), tt.o)
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error shows the secret: %s", err)
			}
		})
	}
}

func TestNewCAFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, file := range map[string]string{"missing": filepath.Join(dir, "none.pem"), "not PEM": notPEM} {
		_, err := New(t.Context(), Options{Endpoint: "https://127.0.0.1:1", Bucket: "registry", CAFile: file})
		if err == nil || !strings.Contains(err.Error(), "caFile") {
			t.Errorf("%s: New error = %v, want one about caFile", name, err)
		}
	}
}

// TestPingAcrossRestart checks that Ping reports a stopped server as
// unreachable and recovers once it is back, and that data survives.
func TestPingAcrossRestart(t *testing.T) {
	t.Parallel()
	srv := miniotest.Start(t)
	d := newTestDriver(t, srv, Options{})
	ctx := t.Context()
	if err := d.PutContent(ctx, "/kept", []byte("data")); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if err := d.Ping(ctx); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Ping with the server stopped = %v, want ErrUnreachable", err)
	}
	srv.Restart()
	if err := d.Ping(ctx); err != nil {
		t.Fatalf("Ping after restart: %v", err)
	}
	got, err := d.GetContent(ctx, "/kept")
	if err != nil || string(got) != "data" {
		t.Fatalf("GetContent after restart = %q, %v", got, err)
	}
}

// TestNewTLS checks that an https Endpoint means TLS, verified against
// CAFile.
func TestNewTLS(t *testing.T) {
	t.Parallel()
	srv := miniotest.StartTLS(t)
	o := Options{
		Endpoint:  srv.Endpoint,
		Bucket:    srv.NewBucket(t),
		AccessKey: srv.AccessKey,
		SecretKey: srv.SecretKey,
		CAFile:    srv.CAFile,
	}
	d, err := New(t.Context(), o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := d.PutContent(t.Context(), "/tls", []byte("ok")); err != nil {
		t.Fatal(err)
	}
	if got, err := d.GetContent(t.Context(), "/tls"); err != nil || string(got) != "ok" {
		t.Fatalf("GetContent = %q, %v", got, err)
	}

	o.CAFile = ""
	_, err = New(t.Context(), o)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("New without the CA = %v, want ErrUnreachable about the certificate", err)
	}
	t.Logf("error: %s", err)
}
