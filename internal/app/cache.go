package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/portcullis/portcullis/internal/api"
	"github.com/portcullis/portcullis/internal/cache"
	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/internal/referrers"
	"github.com/portcullis/portcullis/internal/server"
	"github.com/portcullis/portcullis/replication"
)

// buildRemotes builds the configured remotes once, for the caches and
// replication (one circuit breaker and token cache per remote); the
// caches' metrics observe their requests.
func (a *App) buildRemotes() (map[string]*replication.Remote, error) {
	if a.remotes != nil {
		return a.remotes, nil
	}
	remotes := map[string]*replication.Remote{}
	for i, rc := range a.cfg.Remotes {
		r, err := replication.New(replication.Options{
			Name: rc.Name, URL: rc.URL, UsernameFile: rc.UsernameFile, PasswordFile: rc.PasswordFile,
			CAFile: rc.CAFile, InsecureSkipVerify: rc.InsecureSkipVerify,
			DialTimeout: rc.DialTimeout.D(), ResponseHeaderTimeout: rc.Timeout.D(),
			FailureThreshold: rc.FailureThreshold, OpenFor: rc.OpenFor.D(),
			Observe: func(req replication.Request) {
				if a.observeRemote != nil {
					a.observeRemote(rc.Name)(req)
				}
			},
			Log: a.log.With("upstream", rc.Name),
		})
		if err != nil {
			return nil, fmt.Errorf("remotes[%d]: %w", i, err)
		}
		remotes[rc.Name] = r
	}
	a.remotes = remotes
	return remotes, nil
}

// buildCaches builds the pull-through caches; nil when no cache is
// configured.
func (a *App) buildCaches(repos indexedRepos, refs *referrers.Handler, events *outbox.Outbox) (*cache.Set, error) {
	if len(a.cfg.Cache) == 0 {
		return nil, nil
	}
	remotes, err := a.buildRemotes()
	if err != nil {
		return nil, err
	}
	specs := make([]cache.Spec, 0, len(a.cfg.Cache))
	for _, c := range a.cfg.Cache {
		r := remotes[c.Remote]
		specs = append(specs, cache.Spec{Prefix: c.Prefix, Remote: r, Hosts: c.Hosts, DockerHub: c.DockerHub(r.URL()),
			TagTTL: c.TagTTL.D(), StaleIfError: c.StaleFor(), MaxAge: c.MaxAge.D(), MaxSize: int64(c.MaxSize)})
	}
	set, err := cache.New(specs, cache.Options{
		Repos: repos, Driver: a.driver, Events: events, Referrers: refs, Metrics: a.metrics, Log: a.log, Pulls: a.pulls,
		SpoolDir:   filepath.Join(a.cfg.DataDir, "cache-spool"),
		WriteError: func(w http.ResponseWriter, r *http.Request, err error) { api.WriteError(w, r, a.log, err) },
	})
	if err != nil {
		return nil, err
	}
	a.observeRemote = set.Observe
	return set, nil
}

// serveCacheListeners serves each cache that has a listen address with
// unprefixed paths (for Docker's registry-mirrors, which asks for
// library/alpine): /v2/<name>/... is served as /v2/<prefix>/<name>/...;
// everything else (/v2/, /token) as on the main address.
func (a *App) serveCacheListeners(ctx context.Context) ([]*http.Server, error) {
	var servers []*http.Server
	for i, c := range a.cfg.Cache {
		if c.Listen == "" {
			continue
		}
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", c.Listen)
		if err != nil {
			for _, s := range servers {
				_ = s.Close()
			}
			return nil, fmt.Errorf("cache[%d].listen: %w", i, err)
		}
		hs := &http.Server{Handler: mirrorHandler(c.Prefix, a.handler), ReadHeaderTimeout: a.cfg.HTTP.ReadHeaderTimeout.D(),
			IdleTimeout: a.cfg.HTTP.IdleTimeout.D(), BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) }}
		ln = server.LimitListener(ln, a.cfg.HTTP.MaxConnsPerAddress)
		if a.certs != nil {
			// The same certificate as the main address: the mirror
			// carries the same credentials.
			hs.TLSConfig = a.tlsConfig()
		}
		go func() {
			var err error
			if a.certs != nil {
				err = hs.ServeTLS(ln, "", "")
			} else {
				err = hs.Serve(ln)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.ErrorContext(ctx, "cache listener stopped", "cache", c.Prefix, "addr", c.Listen, "err", err)
			}
		}()
		a.log.InfoContext(ctx, "listening for a cache with unprefixed paths", "cache", c.Prefix, "addr", ln.Addr().String())
		servers = append(servers, hs)
	}
	return servers, nil
}

// mirrorHandler puts every repository path under prefix. A request with
// ?ns= (containerd's mirrors) is left as it comes: the front handler routes
// it by ns to the cache serving that host (prefixed here first, it would
// be prefixed twice: hub/hub/library/alpine).
func mirrorHandler(prefix string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, "/v2/")
		if ok && rest != "" && rest != "_catalog" && !strings.HasPrefix(rest, prefix+"/") && r.URL.Query().Get("ns") == "" {
			r = r.Clone(r.Context())
			r.URL.Path = "/v2/" + prefix + "/" + rest
			r.URL.RawPath = ""
			r.RequestURI = r.URL.RequestURI()
		}
		next.ServeHTTP(w, r)
	})
}
