package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Remote is another registry this one talks to: the upstream of a
// pull-through cache. Credentials come from files, re-read when they change.
type Remote struct {
	// Name identifies the remote in cache entries, metrics and messages.
	Name string `yaml:"name"`
	// URL is the registry's base URL, https://host[:port] (or http://),
	// without a path: https://registry-1.docker.io.
	URL string `yaml:"url"`
	// UsernameFile and PasswordFile hold the credentials (a token counts as
	// a password); both or neither. Default: anonymous.
	UsernameFile string `yaml:"usernameFile"`
	PasswordFile string `yaml:"passwordFile"`
	// CAFile is a PEM bundle trusted, besides the system's roots, for an
	// https URL.
	CAFile string `yaml:"caFile"`
	// InsecureSkipVerify turns TLS certificate verification off.
	InsecureSkipVerify bool `yaml:"insecureSkipVerify"`
	// DialTimeout bounds connecting; default 5s.
	DialTimeout Duration `yaml:"dialTimeout"`
	// Timeout bounds the wait for a response's headers (not the transfer
	// of a body); default 30s.
	Timeout Duration `yaml:"timeout"`
	// FailureThreshold is how many consecutive failures (unreachable,
	// timeouts, 5xx, rate limiting) make the registry stop calling the
	// remote for OpenFor, so that requests do not each wait for a timeout;
	// default 5.
	FailureThreshold int `yaml:"failureThreshold"`
	// OpenFor is how long a failing remote is not called; default 30s.
	OpenFor Duration `yaml:"openFor"`
}

// Cache is a pull-through cache: a namespace prefix of this registry whose
// repositories are filled on demand from a remote and read-only to clients.
type Cache struct {
	// Prefix is the namespace: pulls of <prefix>/library/alpine:3.20 come
	// from the remote's library/alpine:3.20.
	Prefix string `yaml:"prefix"`
	// Remote names an entry of remotes.
	Remote string `yaml:"remote"`
	// Hosts are the registry host names containerd's mirrors send as
	// ?ns=: a request with one of them is served from this cache; a
	// request with any other ns gets 404 and no remote is dialled.
	Hosts []string `yaml:"hosts"`
	// Listen is an optional address (host:port) where this cache is also
	// served with unprefixed paths, for Docker's registry-mirrors.
	Listen string `yaml:"listen"`
	// TagTTL is how long a cached tag is served before it is checked
	// against the remote again (one HEAD); default 5m.
	TagTTL Duration `yaml:"tagTTL"`
	// StaleIfError is how long after its last check a cached tag is
	// still served while the remote is down, refusing the credentials or
	// rate limiting; default 168h. 0s turns stale serving off.
	StaleIfError *Duration `yaml:"staleIfError"`
	// MaxAge evicts a cached manifest (and its tags) that nobody pulled
	// for this long; 0 (the default) keeps it. Garbage collection frees
	// the blobs no other manifest uses.
	MaxAge Duration `yaml:"maxAge"`
	// MaxSize bounds what the cache holds (the manifests' blobs, counted
	// per image): beyond it the least recently pulled images are evicted.
	// 0 (the default) means no bound.
	MaxSize Size `yaml:"maxSize"`
}

// DockerHub reports whether the cache mirrors Docker Hub, where one-word
// repository names live under library/.
func (c Cache) DockerHub(remoteURL string) bool {
	for _, h := range c.Hosts {
		if h == "docker.io" || h == "registry-1.docker.io" || h == "index.docker.io" {
			return true
		}
	}
	u, err := url.Parse(remoteURL)
	return err == nil && (u.Host == "registry-1.docker.io" || u.Host == "index.docker.io")
}

// StaleFor returns how long a cached tag may be served past its last check
// while the remote fails.
func (c Cache) StaleFor() time.Duration {
	if c.StaleIfError == nil {
		return 168 * time.Hour
	}
	return c.StaleIfError.D()
}

func provisionRemotes(rs []Remote, cs []Cache) {
	for i := range rs {
		r := &rs[i]
		if r.DialTimeout == 0 {
			r.DialTimeout = Duration(5 * time.Second)
		}
		if r.Timeout == 0 {
			r.Timeout = Duration(30 * time.Second)
		}
		if r.FailureThreshold == 0 {
			r.FailureThreshold = 5
		}
		if r.OpenFor == 0 {
			r.OpenFor = Duration(30 * time.Second)
		}
	}
	for i := range cs {
		c := &cs[i]
		if c.TagTTL == 0 {
			c.TagTTL = Duration(5 * time.Minute)
		}
		for j, h := range c.Hosts {
			c.Hosts[j] = strings.ToLower(h)
		}
	}
}

// repoPath is the distribution name grammar: path components of lower-case
// alphanumerics separated by '.', '_', '__' or dashes, joined by '/'.
var repoPath = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
})

// hostName is a registry host name as containerd sends it in ns: a DNS
// name or IP address, optionally with a port.
var hostName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$`) })

func validateRemotes(bad func(key, format string, args ...any), rs []Remote, cs []Cache, httpAddr string) {
	names := map[string]bool{}
	for i, r := range rs {
		key := fmt.Sprintf("remotes[%d]", i)
		switch {
		case r.Name == "":
			bad(key+".name", "required")
		case names[r.Name]:
			bad(key+".name", "%q is used by another remote", r.Name)
		}
		names[r.Name] = true
		if u, err := url.Parse(r.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(key+".url", "must be an http:// or https:// URL such as https://registry-1.docker.io")
		} else if u.User != nil {
			bad(key+".url", "must not carry credentials: use usernameFile and passwordFile")
		} else if strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
			bad(key+".url", "must not have a path or query: the registry API lives at /v2/ of the host")
		}
		if (r.UsernameFile == "") != (r.PasswordFile == "") {
			bad(key, "usernameFile and passwordFile must be set together")
		}
		if r.CAFile != "" && r.InsecureSkipVerify {
			bad(key+".caFile", "has no effect with insecureSkipVerify: true")
		}
		for k, d := range map[string]Duration{".dialTimeout": r.DialTimeout, ".timeout": r.Timeout, ".openFor": r.OpenFor} {
			if d < 0 {
				bad(key+k, "must not be negative")
			}
		}
		if r.FailureThreshold < 0 {
			bad(key+".failureThreshold", "must not be negative")
		}
	}
	hosts := map[string]int{}
	listens := map[string]int{}
	for i, c := range cs {
		key := fmt.Sprintf("cache[%d]", i)
		switch {
		case c.Prefix == "":
			bad(key+".prefix", "required: the namespace the cache serves, such as dockerhub")
		case !repoPath().MatchString(c.Prefix):
			bad(key+".prefix", "%q is not a repository path (lower-case letters, digits, separators . _ - and /)", c.Prefix)
		case c.Prefix == "portcullis" || strings.HasPrefix(c.Prefix, "portcullis/"):
			bad(key+".prefix", "the portcullis namespace is the registry's own")
		}
		for j, o := range cs[:i] {
			if o.Prefix == c.Prefix || strings.HasPrefix(c.Prefix, o.Prefix+"/") || strings.HasPrefix(o.Prefix, c.Prefix+"/") {
				bad(key+".prefix", "%q overlaps cache[%d].prefix %q: a repository must belong to one cache", c.Prefix, j, o.Prefix)
			}
		}
		if c.Remote == "" {
			bad(key+".remote", "required: the name of an entry of remotes")
		} else if !names[c.Remote] {
			bad(key+".remote", "%q is not the name of an entry of remotes", c.Remote)
		}
		for j, h := range c.Hosts {
			hk := fmt.Sprintf("%s.hosts[%d]", key, j)
			if !hostName().MatchString(h) {
				bad(hk, "%q is not a host name (as containerd sends it in ?ns=, such as docker.io)", h)
			} else if o, dup := hosts[h]; dup {
				bad(hk, "%q is also a host of cache[%d]", h, o)
			}
			hosts[h] = i
		}
		if c.Listen != "" {
			if _, _, err := net.SplitHostPort(c.Listen); err != nil {
				bad(key+".listen", "must be host:port: %v", err)
			} else if c.Listen == httpAddr {
				bad(key+".listen", "is http.addr: give the cache an address of its own")
			} else if o, dup := listens[c.Listen]; dup {
				bad(key+".listen", "is also the address of cache[%d]", o)
			}
			listens[c.Listen] = i
		}
		for k, d := range map[string]Duration{".tagTTL": c.TagTTL, ".maxAge": c.MaxAge} {
			if d < 0 {
				bad(key+k, "must not be negative")
			}
		}
		if c.StaleIfError != nil && *c.StaleIfError < 0 {
			bad(key+".staleIfError", "must not be negative")
		}
		if c.MaxSize < 0 {
			bad(key+".maxSize", "must not be negative")
		}
	}
}
