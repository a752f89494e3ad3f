package storage

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/google/go-cmp/cmp"
	"github.com/minio/minio-go/v7"
)

func TestTranslate(t *testing.T) {
	t.Parallel()
	s3err := func(code string) error {
		return minio.ErrorResponse{Code: code, Message: "message of " + code, StatusCode: 400}
	}
	tests := []struct {
		name     string
		err      error
		want     error // compared with cmp for driver error types
		wantIs   []error
		wantText string
	}{
		{name: "nil", err: nil, want: nil},
		{
			name: "no such key",
			err:  s3err(minio.NoSuchKey),
			want: storagedriver.PathNotFoundError{Path: "/a/b", DriverName: "minio"},
		},
		{
			name: "no such key wrapped",
			err:  fmt.Errorf("get: %w", s3err(minio.NoSuchKey)),
			want: storagedriver.PathNotFoundError{Path: "/a/b", DriverName: "minio"},
		},
		{
			name: "invalid object name",
			err:  s3err(minio.XMinioInvalidObjectName),
			want: storagedriver.InvalidPathError{Path: "/a/b", DriverName: "minio"},
		},
		{
			name: "key too long",
			err:  s3err("KeyTooLongError"),
			want: storagedriver.InvalidPathError{Path: "/a/b", DriverName: "minio"},
		},
		{
			name:     "no such bucket",
			err:      s3err(minio.NoSuchBucket),
			wantIs:   []error{ErrBucketNotFound},
			wantText: "stat /a/b: bucket not found: message of NoSuchBucket",
		},
		{
			name:     "bad access key",
			err:      s3err("InvalidAccessKeyId"),
			wantIs:   []error{ErrBadCredentials},
			wantText: "stat /a/b: credentials rejected: message of InvalidAccessKeyId",
		},
		{
			name:   "bad signature",
			err:    s3err("SignatureDoesNotMatch"),
			wantIs: []error{ErrBadCredentials},
		},
		{
			name:   "access denied",
			err:    s3err(minio.AccessDenied),
			wantIs: []error{ErrAccessDenied},
		},
		{
			name:     "other S3 error keeps the minio error",
			err:      s3err("SlowDown"),
			wantText: "stat /a/b: message of SlowDown",
		},
		{
			name:     "network error",
			err:      &url.Error{Op: "Head", URL: "http://h/b/k", Err: errors.New("connection refused")},
			wantText: `stat /a/b: Head "http://h/b/k": connection refused`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := translate("stat", "/a/b", tt.err)
			if tt.want != nil || tt.err == nil {
				if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b error) bool { return a == b })); diff != "" {
					t.Fatalf("translate (-want +got):\n%s", diff)
				}
				return
			}
			for _, target := range tt.wantIs {
				if !errors.Is(got, target) {
					t.Errorf("errors.Is(%v, %v) = false", got, target)
				}
			}
			var resp minio.ErrorResponse
			if errors.As(tt.err, &resp) && !errors.As(got, &resp) {
				t.Errorf("translate lost the minio.ErrorResponse: %v", got)
			}
			if tt.wantText != "" && got.Error() != tt.wantText {
				t.Errorf("translate = %q, want %q", got.Error(), tt.wantText)
			}
		})
	}
}

func TestCheckError(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-never-shown"
	d := &driver{endpoint: "http://127.0.0.1:9", bucket: "b", accessKey: "AKID"}
	tests := []struct {
		name string
		err  error
		is   error
		want string
	}{
		{
			name: "bucket",
			err:  minio.ErrorResponse{Code: minio.NoSuchBucket, Message: "The specified bucket does not exist"},
			is:   ErrBucketNotFound,
			want: `storage http://127.0.0.1:9 bucket "b": bucket not found`,
		},
		{
			name: "signature",
			err:  minio.ErrorResponse{Code: "SignatureDoesNotMatch", Message: "secret " + secret},
			is:   ErrBadCredentials,
			want: `storage http://127.0.0.1:9 bucket "b": credentials rejected: access key "AKID": SignatureDoesNotMatch`,
		},
		{
			name: "denied",
			err:  minio.ErrorResponse{Code: minio.AccessDenied},
			is:   ErrAccessDenied,
			want: `storage http://127.0.0.1:9 bucket "b": access denied: access key "AKID": AccessDenied`,
		},
		{
			name: "refused, without the URL",
			err: &url.Error{Op: "Get", URL: "http://127.0.0.1:9/b/?X-Amz-Signature=" + secret, Err: &net.OpError{
				Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused"),
			}},
			is:   ErrUnreachable,
			want: `storage http://127.0.0.1:9 bucket "b": endpoint unreachable: dial tcp: connect: connection refused`,
		},
		{
			name: "timeout",
			err:  fmt.Errorf("get: %w", context.DeadlineExceeded),
			is:   ErrUnreachable,
			want: `storage http://127.0.0.1:9 bucket "b": endpoint unreachable: timed out`,
		},
		{
			name: "dns",
			err:  &url.Error{Op: "Get", URL: "http://nohost/", Err: &net.DNSError{Err: "no such host", Name: "nohost"}},
			is:   ErrUnreachable,
			want: `storage http://127.0.0.1:9 bucket "b": endpoint unreachable: lookup nohost: no such host`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := d.checkError(tt.err)
			if !errors.Is(got, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", got, tt.is)
			}
			if got.Error() != tt.want {
				t.Errorf("checkError =\n%s\nwant\n%s", got, tt.want)
			}
			if strings.Contains(got.Error(), secret) {
				t.Errorf("checkError leaks the secret: %s", got)
			}
		})
	}
}

func TestDirectoriesBetween(t *testing.T) {
	t.Parallel()
	tests := []struct {
		last, file string
		want       []string
	}{
		{"/a", "/a/b/c/f", []string{"/a/b", "/a/b/c"}},
		{"/a/b/c", "/a/b/d/f", []string{"/a/b/d"}},
		{"/a/b/c", "/a/e", nil},
		{"/", "/x/y/z", []string{"/x", "/x/y"}},
		{"/a/b", "/a/bc/f", []string{"/a/bc"}},
		{"/a", "/a/f", nil},
	}
	for _, tt := range tests {
		got := directoriesBetween(tt.last, tt.file)
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("directoriesBetween(%q, %q) (-want +got):\n%s", tt.last, tt.file, diff)
		}
	}
}
