package storage

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/base"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// driverName is what Name returns; distribution puts it in its errors.
const driverName = "minio"

// pendingDir is the key segment, under the prefix, that holds writer state.
// No driver path can name it: '~' is outside storagedriver.PathRegexp.
const pendingDir = "~pending"

// probeTimeout bounds the readiness request New sends.
const probeTimeout = 15 * time.Second

var _ storagedriver.StorageDriver = (*Driver)(nil)

// Driver is a storagedriver.StorageDriver over an S3 bucket. It embeds
// distribution's base.Base, which checks paths and offsets, records storage
// metrics and traces, and names the driver in errors; the calls then reach
// the unexported driver. A Driver is safe for concurrent use.
type Driver struct {
	baseEmbed
	d *driver
}

// baseEmbed keeps base.Base out of Driver's exported fields.
type baseEmbed struct {
	base.Base
}

// driver does the work behind base.Base.
type driver struct {
	client *minio.Client
	// probe shares client's transport but does not retry, so that New and
	// Ping answer at once when the endpoint is down.
	probe       *minio.Client
	endpoint    string // for errors: scheme://host[:port], without credentials
	bucket      string
	accessKey   string // for errors; never the secret key
	root        string // key prefix of driver path "/": "" or "prefix/"
	pendingRoot string // key prefix of writer state: root + "~pending/"
	partSize    int64
	concurrency int
	redirect    bool
	// parts recycles part-size write buffers between uploads.
	parts *sync.Pool
	// commits holds what Stat and Move need of the upload data this
	// process committed; hashWrites the hash states it stored.
	commits    *recent[commit]
	hashWrites *recent[[]byte]
	// stated holds the alias that Stat found at a blob's path, for the
	// Reader that follows it (see Reader).
	stated *recent[alias]
	// held are the small upload commits kept in memory until Move (see
	// held.go).
	held *heldCommits
	// writers are the upload writers open in this process.
	writers *openWriters
}

// New returns a Driver for the bucket o names, after one request that proves
// the endpoint answers, the credentials work and the bucket exists. Its error
// is one line that wraps ErrBucketNotFound, ErrBadCredentials,
// ErrAccessDenied or ErrUnreachable, or lists every problem in o; it never
// contains the secret key.
func New(ctx context.Context, o Options) (*Driver, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	host, secure, err := parseEndpoint(o.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("storage options: endpoint: %w", err)
	}
	transport, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("storage transport: %w", err)
	}
	if o.CAFile != "" {
		pool, err := loadCAs(o.CAFile)
		if err != nil {
			return nil, err
		}
		if transport.TLSClientConfig == nil {
			transport.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		transport.TLSClientConfig.RootCAs = pool
	}
	var creds *credentials.Credentials
	if o.AccessKey != "" {
		creds = credentials.NewStaticV4(o.AccessKey, o.SecretKey, "")
	} else {
		creds = credentials.New(&credentials.Static{Value: credentials.Value{SignerType: credentials.SignatureAnonymous}})
	}
	clientOptions := func(retries int) *minio.Options {
		return &minio.Options{
			Creds:      creds,
			Secure:     secure,
			Transport:  transport,
			Region:     o.Region,
			MaxRetries: retries,
		}
	}
	client, err := minio.New(host, clientOptions(0))
	if err != nil {
		return nil, fmt.Errorf("storage client: %w", err)
	}
	probe, err := minio.New(host, clientOptions(1))
	if err != nil {
		return nil, fmt.Errorf("storage client: %w", err)
	}
	scheme := "http"
	if secure {
		scheme = "https"
	}
	root := ""
	if o.Prefix != "" {
		root = o.Prefix + "/"
	}
	d := &driver{
		client:      client,
		probe:       probe,
		endpoint:    scheme + "://" + host,
		bucket:      o.Bucket,
		accessKey:   o.AccessKey,
		root:        root,
		pendingRoot: root + pendingDir + "/",
		partSize:    o.PartSize,
		parts: &sync.Pool{New: func() any {
			b := make([]byte, 0, o.PartSize)
			return &b
		}},
		concurrency: o.Concurrency,
		redirect:    o.Redirect,
		commits:     newRecent[commit](time.Now),
		hashWrites:  newRecent[[]byte](time.Now),
		stated:      newRecent[alias](time.Now),
		held:        newHeldCommits(time.Now),
		writers:     newOpenWriters(time.Now),
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if err := d.ping(ctx); err != nil {
		return nil, err
	}
	return &Driver{baseEmbed: baseEmbed{base.Base{StorageDriver: d}}, d: d}, nil
}

// Ping sends one request that needs the endpoint to answer, the credentials
// to be valid and the bucket to exist and be readable. Its error is one line
// wrapping ErrBucketNotFound, ErrBadCredentials, ErrAccessDenied or
// ErrUnreachable, or describing what else the server answered. It does not
// retry: it is meant for readiness checks.
func (d *Driver) Ping(ctx context.Context) error {
	return d.d.ping(ctx)
}

func (d *driver) ping(ctx context.Context) error {
	noOwner := false
	for obj := range d.probe.ListObjectsIter(ctx, d.bucket, minio.ListObjectsOptions{
		Prefix:     d.root,
		MaxKeys:    1,
		FetchOwner: &noOwner,
	}) {
		return d.checkError(obj.Err)
	}
	return nil
}

func loadCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("storage options: caFile: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("storage options: caFile: %s holds no PEM certificate", file)
	}
	return pool, nil
}

// Name returns "minio".
func (d *driver) Name() string { return driverName }

// key returns the object key of a driver path; "/" gives the root prefix.
func (d *driver) key(path string) string {
	return d.root + strings.TrimPrefix(path, "/")
}

// dirPrefix returns the key prefix under which the children of path live.
func (d *driver) dirPrefix(path string) string {
	if path == "/" {
		return d.root
	}
	return d.key(path) + "/"
}

// pendingKey returns the key of the pending tail of a Writer on path.
func (d *driver) pendingKey(path string) string {
	return d.pendingRoot + strings.TrimPrefix(path, "/")
}

// pathOf returns the driver path of an object key under the root.
func (d *driver) pathOf(key string) string {
	return "/" + strings.TrimPrefix(key, d.root)
}

// isPending reports whether key belongs to writer state.
func (d *driver) isPending(key string) bool {
	return strings.HasPrefix(key, d.pendingRoot)
}

// RedirectURL returns a presigned URL for GET and HEAD requests when
// Options.Redirect is set, else "". The URL of an alias is that of its data
// object, found with one HEAD request.
func (d *driver) RedirectURL(r *http.Request, path string) (string, error) {
	if !d.redirect {
		return "", nil
	}
	const expiry = 20 * time.Minute
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return "", nil
	}
	key := d.key(path)
	a, ok, err := d.statAlias(r.Context(), key)
	if err != nil {
		return "", translate("presign", path, err)
	}
	if ok {
		key = a.key
	}
	var u *url.URL
	if r.Method == http.MethodGet {
		u, err = d.client.PresignedGetObject(r.Context(), d.bucket, key, expiry, nil)
	} else {
		u, err = d.client.PresignedHeadObject(r.Context(), d.bucket, key, expiry, nil)
	}
	if err != nil {
		return "", translate("presign", path, err)
	}
	return u.String(), nil
}
