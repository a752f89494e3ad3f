// Package config holds Portcullis's configuration: the types that mirror the
// YAML file, their defaults, strict loading and validation.
//
// It imports only the standard library and the YAML decoder; every component
// receives its own section, never the whole Config.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// CurrentVersion is the only configuration file version this build reads.
const CurrentVersion = 1

// Config is the whole configuration file.
type Config struct {
	// Version is the file format version; it must be 1.
	Version int `yaml:"version"`
	// DataDir holds node-local state: the metadata database and, unless
	// storage says otherwise, the filesystem storage root.
	DataDir string  `yaml:"dataDir"`
	HTTP    HTTP    `yaml:"http"`
	Log     Log     `yaml:"log"`
	Storage Storage `yaml:"storage"`
	// Validation decides which manifests the registry accepts.
	Validation Validation `yaml:"validation"`
	Catalog    Catalog    `yaml:"catalog"`
	// Auth turns on token authentication and access rules.
	Auth Auth `yaml:"auth"`
	// Trust says which signatures the registry trusts, per repository.
	Trust Trust `yaml:"trust"`
	// Admission adds external admission webhooks.
	Admission Admission `yaml:"admission"`
	// Scan says what scan results mean per repository.
	Scan Scan `yaml:"scan"`
	// Remotes are the other registries this one talks to.
	Remotes []Remote `yaml:"remotes"`
	// Cache lists the pull-through caches: namespaces filled on demand
	// from a remote.
	Cache []Cache `yaml:"cache"`
	// GC configures garbage collection.
	GC GC `yaml:"gc"`
	// Retention deletes tags by policy.
	Retention Retention `yaml:"retention"`
	// Replication copies images to and from other sites.
	Replication Replication `yaml:"replication"`
	// Reload configures reloading while the registry runs.
	Reload Reload `yaml:"reload"`
}

// HTTP configures the listener and server.
type HTTP struct {
	// Addr is the listen address, host:port.
	Addr string `yaml:"addr"`
	// Host is the externally visible base URL (https://registry.example.com),
	// used to build Location headers; empty means from the request.
	Host string `yaml:"host"`
	// RelativeURLs makes Location headers relative.
	RelativeURLs bool `yaml:"relativeURLs"`
	TLS          TLS  `yaml:"tls"`
	// SecretFile holds the key that signs upload state between requests.
	// Replicas behind one load balancer must share it. Empty means a random
	// key per process.
	SecretFile string `yaml:"secretFile"`
	// ShutdownGrace is how long in-flight requests may run after SIGTERM.
	ShutdownGrace Duration `yaml:"shutdownGrace"`
	// ReadHeaderTimeout bounds the time to read request headers.
	ReadHeaderTimeout Duration `yaml:"readHeaderTimeout"`
	// IdleTimeout bounds keep-alive connections between requests.
	IdleTimeout Duration `yaml:"idleTimeout"`
	// MinBodyRate is the slowest a request body may arrive, in bytes per
	// second on average after BodyGrace: a body that falls behind is cut
	// off. 0 turns the bound off.
	MinBodyRate int64 `yaml:"minBodyRate"`
	// BodyGrace is the head start a request body gets before MinBodyRate
	// counts.
	BodyGrace Duration `yaml:"bodyGrace"`
	// MaxConnsPerAddress bounds the connections one client address may
	// hold open at once; further ones are closed at once. Behind a proxy or
	// load balancer every client shares its address: raise it, or set 0
	// (no bound) and bound connections at the proxy.
	MaxConnsPerAddress int `yaml:"maxConnsPerAddress"`
	// MetricsAddr, when set, serves /metrics alone on a listener of its
	// own (host:port, plain HTTP, no auth: bind it to a private address)
	// and not on Addr. Empty: /metrics is on Addr, behind auth when auth
	// is on.
	MetricsAddr string `yaml:"metricsAddr"`
}

// TLS configures HTTPS. Both files set means TLS (and HTTP/2) is on.
type TLS struct {
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
}

// Enabled reports whether TLS is configured.
func (t TLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// Log configures structured logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is json or text.
	Format string `yaml:"format"`
	// AccessLog writes one line per request.
	AccessLog *bool `yaml:"accessLog"`
}

// AccessLogEnabled reports whether per-request lines are written.
func (l Log) AccessLogEnabled() bool { return l.AccessLog == nil || *l.AccessLog }

// Storage configures where blobs and manifests live.
type Storage struct {
	Filesystem Filesystem `yaml:"filesystem"`
	// S3 selects the S3 or MinIO backend instead of the filesystem.
	S3 *S3 `yaml:"s3"`
	// Delete allows manifest, tag and blob deletion through the API.
	Delete Toggle `yaml:"delete"`
	// UploadPurging removes abandoned uploads.
	UploadPurging UploadPurging `yaml:"uploadPurging"`
}

// Filesystem is the local filesystem backend.
type Filesystem struct {
	// RootDirectory defaults to DataDir.
	RootDirectory string `yaml:"rootDirectory"`
}

// Toggle is an on/off switch whose zero value means the default.
type Toggle struct {
	Enabled *bool `yaml:"enabled"`
}

// On reports the switch's value, or def when unset.
func (t Toggle) On(def bool) bool {
	if t.Enabled == nil {
		return def
	}
	return *t.Enabled
}

// UploadPurging removes uploads older than Age every Interval.
type UploadPurging struct {
	Enabled  *bool    `yaml:"enabled"`
	Age      Duration `yaml:"age"`
	Interval Duration `yaml:"interval"`
}

// Validation decides which manifests are accepted.
type Validation struct {
	// ForeignLayerURLs lists regular expressions a non-distributable layer's
	// URL must match. Empty means any http or https URL.
	ForeignLayerURLs []string `yaml:"foreignLayerURLs"`
	// AllowIncompleteIndexes accepts an image index whose child manifests
	// are not in the repository yet. By default such an index is rejected
	// (MANIFEST_BLOB_UNKNOWN), so that every index can be pulled whole.
	AllowIncompleteIndexes bool `yaml:"allowIncompleteIndexes"`
}

// Catalog configures GET /v2/_catalog.
type Catalog struct {
	// MaxEntries caps one catalog page.
	MaxEntries int `yaml:"maxEntries"`
}

// Duration is a time.Duration written as "30s" in YAML.
type Duration time.Duration

// UnmarshalYAML decodes a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: duration must be a string like \"30s\"", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML encodes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Default returns the configuration used when no file is given: a registry
// on 127.0.0.1:5000 storing everything under ./data.
func Default() *Config {
	c := &Config{Version: CurrentVersion}
	c.Provision()
	return c
}

// Provision fills every unset field with its default. It is idempotent.
func (c *Config) Provision() {
	if c.DataDir == "" {
		c.DataDir = "./data"
	}
	if c.HTTP.Addr == "" {
		c.HTTP.Addr = "127.0.0.1:5000"
	}
	if c.HTTP.ShutdownGrace == 0 {
		c.HTTP.ShutdownGrace = Duration(30 * time.Second)
	}
	if c.HTTP.ReadHeaderTimeout == 0 {
		c.HTTP.ReadHeaderTimeout = Duration(30 * time.Second)
	}
	if c.HTTP.IdleTimeout == 0 {
		c.HTTP.IdleTimeout = Duration(2 * time.Minute)
	}
	if c.HTTP.MinBodyRate == 0 {
		c.HTTP.MinBodyRate = 1024
	}
	if c.HTTP.BodyGrace == 0 {
		c.HTTP.BodyGrace = Duration(30 * time.Second)
	}
	if c.HTTP.MaxConnsPerAddress == 0 {
		c.HTTP.MaxConnsPerAddress = 256
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	if c.Storage.UploadPurging.Age == 0 {
		c.Storage.UploadPurging.Age = Duration(7 * 24 * time.Hour)
	}
	if c.Storage.UploadPurging.Interval == 0 {
		c.Storage.UploadPurging.Interval = Duration(24 * time.Hour)
	}
	if c.Catalog.MaxEntries == 0 {
		c.Catalog.MaxEntries = 1000
	}
	c.Auth.Provision()
	c.Trust.Provision()
	c.Admission.Provision()
	c.Scan.Provision()
	provisionRemotes(c.Remotes, c.Cache)
	c.GC.provision()
	c.Replication.provision()
	c.Reload.provision()
	defaultTrue(&c.Log.AccessLog)
	defaultTrue(&c.Storage.Delete.Enabled)
	defaultTrue(&c.Storage.UploadPurging.Enabled)
}

func defaultTrue(b **bool) {
	if *b == nil {
		t := true
		*b = &t
	}
}

// FilesystemRoot returns the filesystem storage root.
func (c *Config) FilesystemRoot() string {
	if c.Storage.Filesystem.RootDirectory != "" {
		return c.Storage.Filesystem.RootDirectory
	}
	return c.DataDir
}

// MetadataPath returns the path of the node-local metadata database.
func (c *Config) MetadataPath() string { return filepath.Join(c.DataDir, "portcullis.db") }

// Load decodes a configuration strictly (an unknown key is an error),
// fills defaults and validates it. It returns every validation problem at once.
func Load(r io.Reader) (*Config, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var c Config
	// Every key, kind and duration first, with its key path and line: the
	// strict decoder below stops at the first problem.
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("decode config: %w", err)
	}
	if errs := checkShape(&root); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config is empty: it needs at least \"version: 1\"")
		}
		return nil, fmt.Errorf("decode config: %w", err)
	}
	c.Provision()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// LoadFile loads the configuration file at path.
func LoadFile(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open config: %w", err)
	}
	defer f.Close()
	c, err := Load(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Validate checks the provisioned configuration and returns every problem,
// each prefixed with its key path, joined into one error.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.Version != CurrentVersion {
		bad("version", "must be %d, got %d", CurrentVersion, c.Version)
	}
	if _, _, err := net.SplitHostPort(c.HTTP.Addr); err != nil {
		bad("http.addr", "must be host:port: %v", err)
	}
	if m := c.HTTP.MetricsAddr; m != "" {
		if _, _, err := net.SplitHostPort(m); err != nil {
			bad("http.metricsAddr", "must be host:port: %v", err)
		} else if m == c.HTTP.Addr {
			bad("http.metricsAddr", "is http.addr: give metrics an address of their own, or leave it empty to serve them on http.addr")
		}
	}
	if c.HTTP.Host != "" && !strings.HasPrefix(c.HTTP.Host, "http://") && !strings.HasPrefix(c.HTTP.Host, "https://") {
		bad("http.host", "must be an absolute http or https URL")
	}
	if (c.HTTP.TLS.CertFile == "") != (c.HTTP.TLS.KeyFile == "") {
		bad("http.tls", "certFile and keyFile must be set together")
	}
	for key, d := range map[string]Duration{
		"http.shutdownGrace":             c.HTTP.ShutdownGrace,
		"http.readHeaderTimeout":         c.HTTP.ReadHeaderTimeout,
		"http.idleTimeout":               c.HTTP.IdleTimeout,
		"http.bodyGrace":                 c.HTTP.BodyGrace,
		"storage.uploadPurging.age":      c.Storage.UploadPurging.Age,
		"storage.uploadPurging.interval": c.Storage.UploadPurging.Interval,
	} {
		if d < 0 {
			bad(key, "must not be negative")
		}
	}
	if c.HTTP.MinBodyRate < 0 {
		bad("http.minBodyRate", "must not be negative (0 turns the bound off)")
	}
	if c.HTTP.MaxConnsPerAddress < 0 {
		bad("http.maxConnsPerAddress", "must not be negative (0 turns the bound off)")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		bad("log.format", "must be json or text, got %q", c.Log.Format)
	}
	for i, s := range c.Validation.ForeignLayerURLs {
		if _, err := regexp.Compile(s); err != nil {
			bad(fmt.Sprintf("validation.foreignLayerURLs[%d]", i), "invalid regular expression: %v", err)
		}
	}
	if c.Storage.S3 != nil {
		c.Storage.S3.validate(bad)
		if c.Storage.Filesystem.RootDirectory != "" {
			bad("storage", "set either filesystem or s3, not both")
		}
	}
	if c.Catalog.MaxEntries < 0 {
		bad("catalog.maxEntries", "must be positive")
	}
	errs = append(errs, c.Auth.Validate("auth")...)
	errs = append(errs, c.Trust.Validate("trust")...)
	c.Admission.validate(bad)
	c.Scan.validate(bad)
	validateRemotes(bad, c.Remotes, c.Cache, c.HTTP.Addr)
	c.GC.validate(bad)
	c.Retention.validate(bad)
	c.Replication.validate(bad, c.Remotes)
	c.Reload.validate(bad)
	for i, p := range c.Scan.Policies {
		if p.Mode == "quarantine" && !c.Auth.Enabled {
			bad(fmt.Sprintf("scan.policies[%d].mode", i), "quarantine needs auth.enabled: without identities nobody can be told apart from the pusher")
		}
	}
	for i, p := range c.Trust.Policies {
		if p.Mode == "quarantine" && !c.Auth.Enabled {
			bad(fmt.Sprintf("trust.policies[%d].mode", i), "quarantine needs auth.enabled: without identities nobody can be told apart from the pusher and signers")
		}
	}
	if c.Auth.Enabled && c.Auth.Token.Realm == "" && c.HTTP.Host == "" {
		if host, _, err := net.SplitHostPort(c.HTTP.Addr); err == nil && (host == "" || net.ParseIP(host).IsUnspecified()) {
			bad("auth.token.realm", "required when http.addr listens on every interface and http.host is unset: clients need the token endpoint's public URL")
		}
	}
	return errors.Join(errs...)
}
