package storage

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/minio/minio-go/v7"
)

var (
	// ErrBucketNotFound is returned by New and Ping, and wrapped in the error
	// of any operation, when Options.Bucket does not exist.
	ErrBucketNotFound = errors.New("bucket not found")
	// ErrBadCredentials is returned by New and Ping, and wrapped in the error
	// of any operation, when the server does not know the access key or the
	// secret key does not match it.
	ErrBadCredentials = errors.New("credentials rejected")
	// ErrAccessDenied is returned by New and Ping, and wrapped in the error
	// of any operation, when the credentials are valid but the bucket's
	// policy denies the request.
	ErrAccessDenied = errors.New("access denied")
	// ErrUnreachable is returned by New and Ping when no HTTP response came
	// back from the endpoint: refused or timed-out connection, unknown host,
	// TLS failure.
	ErrUnreachable = errors.New("endpoint unreachable")
)

// S3 error codes the driver acts on. minio-go gives names to some.
const (
	codeNoSuchKey             = minio.NoSuchKey
	codeNoSuchBucket          = minio.NoSuchBucket
	codeNoSuchUpload          = minio.NoSuchUpload
	codeInvalidRange          = "InvalidRange"
	codeAccessDenied          = minio.AccessDenied
	codeInvalidAccessKeyID    = "InvalidAccessKeyId"
	codeSignatureDoesNotMatch = "SignatureDoesNotMatch"
	codeInvalidObjectName     = minio.XMinioInvalidObjectName
	codeKeyTooLong            = "KeyTooLongError"
)

// errorCode returns the S3 error code carried by err, or "".
func errorCode(err error) string {
	var resp minio.ErrorResponse
	if errors.As(err, &resp) {
		return resp.Code
	}
	return ""
}

// isNotFound reports whether err says the object does not exist.
func isNotFound(err error) bool {
	return errorCode(err) == codeNoSuchKey
}

// bucketError returns the sentinel for an error that concerns the bucket or
// the credentials rather than one object, or nil.
func bucketError(err error) error {
	switch errorCode(err) {
	case codeNoSuchBucket:
		return ErrBucketNotFound
	case codeInvalidAccessKeyID, codeSignatureDoesNotMatch, "InvalidToken", "ExpiredToken":
		return ErrBadCredentials
	case codeAccessDenied:
		return ErrAccessDenied
	}
	return nil
}

// translate turns an error from minio-go for an operation on path into what
// distribution expects: storagedriver.PathNotFoundError for a missing object,
// storagedriver.InvalidPathError for a key the server refuses, and otherwise
// the error wrapped with the operation, path and, where one applies, one of
// this package's sentinels.
func translate(op, path string, err error) error {
	if err == nil {
		return nil
	}
	switch errorCode(err) {
	case codeNoSuchKey:
		return storagedriver.PathNotFoundError{Path: path, DriverName: driverName}
	case codeInvalidObjectName, codeKeyTooLong:
		return storagedriver.InvalidPathError{Path: path, DriverName: driverName}
	}
	if sentinel := bucketError(err); sentinel != nil {
		return fmt.Errorf("%s %s: %w: %w", op, path, sentinel, err)
	}
	return fmt.Errorf("%s %s: %w", op, path, err)
}

// checkError turns the error of the readiness probe into one line naming the
// endpoint, the bucket and the cause, wrapping one of this package's
// sentinels. It never includes the secret key: the messages are built here
// from the error code or the network error, not from request URLs.
func (d *driver) checkError(err error) error {
	if err == nil {
		return nil
	}
	var cause error
	switch sentinel := bucketError(err); {
	case sentinel == ErrBucketNotFound:
		cause = sentinel
	case sentinel != nil:
		cause = fmt.Errorf("%w: access key %q: %s", sentinel, d.accessKey, errorCode(err))
	case errorCode(err) != "":
		var resp minio.ErrorResponse
		errors.As(err, &resp)
		cause = fmt.Errorf("%s: %s", resp.Code, resp.Message)
	default:
		cause = fmt.Errorf("%w: %s", ErrUnreachable, networkCause(err))
	}
	return fmt.Errorf("storage %s bucket %q: %w", d.endpoint, d.bucket, cause)
}

// networkCause describes an error that came before any HTTP response without
// the request URL.
func networkCause(err error) string {
	var opErr *net.OpError
	var dnsErr *net.DNSError
	var urlErr *url.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	case errors.As(err, &dnsErr):
		return dnsErr.Error()
	case errors.As(err, &opErr):
		return opErr.Error()
	case errors.As(err, &urlErr):
		return urlErr.Err.Error()
	}
	return err.Error()
}
