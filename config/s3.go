package config

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// S3 is the S3 or MinIO storage backend. Credentials come from
// AccessKeyFile and SecretKeyFile, else from the environment
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
type S3 struct {
	// Endpoint is the S3 API URL; its scheme (http or https) decides TLS.
	Endpoint string `yaml:"endpoint"`
	// Region is the bucket's region; empty asks the server.
	Region string `yaml:"region"`
	// Bucket must exist.
	Bucket string `yaml:"bucket"`
	// AccessKeyFile and SecretKeyFile hold the credentials.
	AccessKeyFile string `yaml:"accessKeyFile"`
	SecretKeyFile string `yaml:"secretKeyFile"`
	// Prefix is prepended to every object key.
	Prefix string `yaml:"prefix"`
	// CAFile is a PEM bundle trusted for an https endpoint.
	CAFile string `yaml:"caFile"`
	// PartSize is the multipart upload part size, "16MiB"; it bounds the
	// memory of each upload in flight.
	PartSize Size `yaml:"partSize"`
	// Concurrency is how many parts one server-side copy runs at once.
	Concurrency int `yaml:"concurrency"`
	// Redirect sends blob downloads to presigned URLs on the object store.
	Redirect bool `yaml:"redirect"`
}

var bucketName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`) })

// Size is a byte count written as an integer or with a unit: "16MiB".
type Size int64

// UnmarshalYAML decodes 1048576, "1048576", "512KiB", "16MiB" or "1GiB".
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*s = v
	return nil
}

// MarshalYAML encodes the size in bytes.
func (s Size) MarshalYAML() (any, error) { return int64(s), nil }

// ParseSize parses a byte count with an optional KiB, MiB or GiB unit.
func ParseSize(str string) (Size, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	num, mult := strings.TrimSpace(str), int64(1)
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q: want a number of bytes, optionally with KiB, MiB or GiB", str)
	}
	return Size(v * mult), nil
}

func (s *S3) validate(bad func(key, format string, args ...any)) {
	switch u, err := url.Parse(s.Endpoint); {
	case s.Endpoint == "":
		bad("storage.s3.endpoint", "required")
	case err == nil && u.User != nil:
		bad("storage.s3.endpoint", "must not carry credentials; use accessKeyFile and secretKeyFile")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		bad("storage.s3.endpoint", "must be an http:// or https:// URL")
	case u.Path != "" && u.Path != "/":
		bad("storage.s3.endpoint", "must not have a path; use prefix")
	}
	if s.Bucket == "" {
		bad("storage.s3.bucket", "required")
	} else if !bucketName().MatchString(s.Bucket) || strings.Contains(s.Bucket, "..") {
		bad("storage.s3.bucket", "%q is not a valid bucket name: 3 to 63 lower-case letters, digits, '.' and '-', starting and ending with a letter or digit", s.Bucket)
	}
	if (s.AccessKeyFile == "") != (s.SecretKeyFile == "") {
		bad("storage.s3", "accessKeyFile and secretKeyFile must be set together")
	}
	if s.PartSize != 0 && (s.PartSize < 5<<20 || s.PartSize > 5<<30) {
		bad("storage.s3.partSize", "must be between 5MiB and 5GiB")
	}
	if s.Concurrency < 0 {
		bad("storage.s3.concurrency", "must not be negative")
	}
}
