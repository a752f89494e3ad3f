package storage

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/minio/minio-go/v7/pkg/s3utils"
)

const (
	// MinPartSize is the smallest part S3 accepts for any but the last part
	// of a multipart upload, and so the smallest Options.PartSize.
	MinPartSize = 5 << 20
	// DefaultPartSize is the part size when Options.PartSize is zero.
	DefaultPartSize = 16 << 20
	// MaxPartSize is the largest part S3 accepts, and the largest object
	// that one PUT or one server-side copy can write.
	MaxPartSize = 5 << 30
	// DefaultConcurrency is the number of parallel part copies in Move
	// when Options.Concurrency is zero.
	DefaultConcurrency = 4
)

// Options configures a Driver. The zero value of each optional field means its
// default.
type Options struct {
	// Endpoint is the URL of the S3 API, for example "https://minio.example:9000".
	// Its scheme, http or https, decides TLS. It carries no path and no
	// credentials. Required.
	Endpoint string
	// Region is the bucket's region. Empty asks the server once, at start.
	Region string
	// Bucket holds everything the driver writes. It must exist. Required.
	Bucket string
	// AccessKey and SecretKey sign every request. Both empty means anonymous
	// requests. SecretKey never appears in an error.
	AccessKey string
	SecretKey string
	// Prefix is prepended to every object key ("registry" puts the driver
	// path /docker/x at key registry/docker/x). Empty is the bucket root.
	Prefix string
	// CAFile is a PEM file of certificate authorities trusted for an https
	// Endpoint, in addition to the system's.
	CAFile string
	// PartSize is the size of each multipart upload part, and so the memory
	// each open Writer holds at most. Default DefaultPartSize, at least
	// MinPartSize, at most MaxPartSize.
	PartSize int64
	// Concurrency is how many part copies one Move of an object larger than
	// MaxPartSize runs in parallel. Default DefaultConcurrency.
	Concurrency int
	// Redirect makes RedirectURL return presigned GET and HEAD URLs, so that
	// clients fetch blobs from the object store directly. When false
	// RedirectURL returns "" and the registry serves blobs itself.
	Redirect bool
}

// withDefaults returns o with every zero optional field set to its default and
// the prefix normalised, or every problem found in o.
func (o Options) withDefaults() (Options, error) {
	var errs []error
	if o.Endpoint == "" {
		errs = append(errs, errors.New("endpoint: required"))
	} else if _, _, err := parseEndpoint(o.Endpoint); err != nil {
		errs = append(errs, fmt.Errorf("endpoint: %w", err))
	}
	if o.Bucket == "" {
		errs = append(errs, errors.New("bucket: required"))
	} else if err := s3utils.CheckValidBucketNameStrict(o.Bucket); err != nil {
		errs = append(errs, fmt.Errorf("bucket: %w", err))
	}
	if (o.AccessKey == "") != (o.SecretKey == "") {
		errs = append(errs, errors.New("accessKey and secretKey: set both or neither"))
	}
	switch {
	case o.PartSize == 0:
		o.PartSize = DefaultPartSize
	case o.PartSize < MinPartSize || o.PartSize > MaxPartSize:
		errs = append(errs, fmt.Errorf("partSize: %d is outside [%d, %d]", o.PartSize, MinPartSize, MaxPartSize))
	}
	switch {
	case o.Concurrency == 0:
		o.Concurrency = DefaultConcurrency
	case o.Concurrency < 0 || o.Concurrency > 100:
		errs = append(errs, fmt.Errorf("concurrency: %d is outside [1, 100]", o.Concurrency))
	}
	o.Prefix = strings.Trim(o.Prefix, "/")
	if o.Prefix != "" && strings.Contains(o.Prefix, "//") {
		errs = append(errs, fmt.Errorf("prefix: %q has an empty path segment", o.Prefix))
	}
	if err := errors.Join(errs...); err != nil {
		return o, fmt.Errorf("storage options: %w", err)
	}
	return o, nil
}

// parseEndpoint splits an endpoint URL into the host[:port] minio-go wants and
// whether it uses TLS. Errors name the endpoint without any user information.
func parseEndpoint(endpoint string) (host string, secure bool, err error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", false, errors.New("not a URL")
	}
	switch {
	case u.User != nil:
		return "", false, errors.New("must not contain credentials; set accessKey and secretKey")
	case u.Scheme != "http" && u.Scheme != "https":
		return "", false, fmt.Errorf("%s: scheme must be http or https", u.Redacted())
	case u.Host == "":
		return "", false, fmt.Errorf("%s: no host", u.Redacted())
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return "", false, fmt.Errorf("%s: must have no path, query or fragment", u.Redacted())
	}
	return u.Host, u.Scheme == "https", nil
}
