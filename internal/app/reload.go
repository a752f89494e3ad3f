package app

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis/portcullis/config"
)

// ErrRefused wraps every reason a reload is refused; the running
// configuration then stays in effect, whole.
var ErrRefused = errors.New("configuration reload refused")

// liveKeys are the configuration's key paths a reload may change; every
// other key needs a restart. Under auth, enabled and audit need one too
// (distribution's access control and the audit file are set up at start).
var (
	liveKeys     = []string{"auth", "trust", "admission", "scan", "http.tls.certFile", "http.tls.keyFile", "reload"}
	restartUnder = []string{"auth.enabled", "auth.audit"}
)

// underKey reports whether path is key or below it.
func underKey(path, key string) bool {
	return path == key || strings.HasPrefix(path, key+".") || strings.HasPrefix(path, key+"[")
}

// restartKeys returns the key paths that differ between the running
// configuration and next and cannot change live.
func restartKeys(running, next *config.Config) []string {
	var out []string
	if running.HTTP.TLS.Enabled() != next.HTTP.TLS.Enabled() {
		out = append(out, "http.tls")
	}
	for _, p := range config.Diff(running, next) {
		live := slices.ContainsFunc(liveKeys, func(k string) bool { return underKey(p, k) }) &&
			!slices.ContainsFunc(restartUnder, func(k string) bool { return underKey(p, k) })
		if !live && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// Reload reads the configuration again and every file it names and, when
// all of it is valid, serves it as a new generation: requests already
// under way finish under the one they started with. Otherwise it keeps the
// running configuration whole and returns an error wrapping ErrRefused
// that lists every problem, or the keys that need a restart. Either way
// it logs one line and counts the reload in the metrics, so callers that
// do not wait on the result (SIGHUP) need not log it.
func (a *App) Reload(ctx context.Context) error { return a.reload(ctx, "signal") }

func (a *App) reload(ctx context.Context, trigger string) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	running := a.gen.Load()
	// What the watch would see of the files now: a refusal is not tried
	// again by the watch until they change (a refused SIGHUP included).
	seen := watchSum(a.configFile(), fingerprints(running.cfg))
	g, err := a.nextGeneration(running)
	if err != nil {
		problems := strings.Split(err.Error(), "\n")
		a.log.ErrorContext(ctx, "configuration reload refused; the running configuration stays in effect",
			"trigger", trigger, "generation", running.id, "problems", problems)
		a.reloads.failed()
		a.refused = seen
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	g.id = running.id + 1
	a.gen.Store(g)
	if a.certs != nil {
		a.certs.Set(g.tls)
	}
	changed := changedSections(running, g)
	a.log.InfoContext(ctx, "configuration reloaded", "trigger", trigger, "generation", g.id, "changed", changed)
	a.reloads.succeeded(g)
	return nil
}

// nextGeneration loads the configuration and builds its generation after
// running.
func (a *App) nextGeneration(running *generation) (*generation, error) {
	if a.opts.Load == nil {
		return nil, errors.New("the registry runs without a configuration to read again")
	}
	// Files are summed before they are read: a change made while the
	// generation is built is seen by the next check.
	file := a.configFile()
	cfg, err := a.opts.Load()
	if err != nil {
		return nil, err
	}
	var restart error
	if keys := restartKeys(running.cfg, cfg); len(keys) > 0 {
		restart = fmt.Errorf("these settings cannot change while the registry runs; restart it to change them: %s", strings.Join(keys, ", "))
	}
	// Built even when a restart is needed, to report its problems too.
	g, err := a.newGeneration(cfg, running)
	if err := errors.Join(restart, err); err != nil {
		return nil, err
	}
	g.watched = watchSum(file, g.sums)
	return g, nil
}

// changedSections lists the live sections whose settings or files differ
// between two generations, in key order.
func changedSections(old, next *generation) []string {
	changed := []string{}
	for name, sum := range next.sums {
		if old.sums[name] != sum {
			changed = append(changed, name)
		}
	}
	slices.Sort(changed)
	return changed
}

// watch checks, every reload.interval of the current generation, the TLS
// pair's files (a renewed certificate is served without a reload) and,
// when reload.watch is on, the configuration file and the files its live
// sections name: a change reloads. A change that is refused is logged
// once, not on every check.
func (a *App) watch(ctx context.Context) {
	for {
		t := time.NewTimer(a.gen.Load().cfg.Reload.Interval.D())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		a.checkFiles(ctx)
	}
}

// checkFiles is one check of the watch: the TLS pair's files and, when
// reload.watch is on, a reload when the files changed since the current
// generation was built and since the last refusal.
func (a *App) checkFiles(ctx context.Context) {
	if a.certs != nil {
		a.certs.Refresh(ctx)
	}
	g := a.gen.Load()
	if !g.cfg.Reload.Watch {
		return
	}
	now := watchSum(a.configFile(), fingerprints(g.cfg))
	a.reloadMu.Lock()
	refused := a.refused
	a.reloadMu.Unlock()
	if now == g.watched || now == refused {
		return
	}
	_ = a.reload(ctx, "watch") // logged and counted by reload
}

// configFile returns the configuration file's contents, or its error,
// for watchSum.
func (a *App) configFile() []byte {
	if a.opts.ConfigFile == "" {
		return nil
	}
	data, err := os.ReadFile(a.opts.ConfigFile)
	if err != nil {
		return []byte(err.Error())
	}
	return data
}

// watchSum sums the configuration file and the fingerprints of the live
// sections, but for the TLS pair (served anew without a reload).
func watchSum(configFile []byte, sums map[string][sha256.Size]byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(configFile)
	names := make([]string, 0, len(sums))
	for name := range sums {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if name == "http.tls" {
			continue
		}
		sum := sums[name]
		h.Write([]byte(name))
		h.Write(sum[:])
	}
	var out [sha256.Size]byte
	copy(out[:], h.Sum(nil))
	return out
}

// reloadMetrics count reloads.
type reloadMetrics struct {
	reloads     *prometheus.CounterVec
	generation  prometheus.Gauge
	lastSuccess prometheus.Gauge
	successful  prometheus.Gauge
}

func newReloadMetrics(reg prometheus.Registerer, g *generation) (*reloadMetrics, error) {
	m := &reloadMetrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "config", Name: "reloads_total",
			Help: "Configuration reloads (SIGHUP or a watched file) by result (success, failure).",
		}, []string{"result"}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "portcullis", Subsystem: "config", Name: "generation",
			Help: "Generation of the configuration in effect: 1 at start, one more per successful reload.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "portcullis", Subsystem: "config", Name: "last_reload_success_timestamp_seconds",
			Help: "When the configuration in effect was loaded (at start or by the last successful reload), in Unix seconds.",
		}),
		successful: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "portcullis", Subsystem: "config", Name: "last_reload_successful",
			Help: "1 when the last reload succeeded (or none was tried), 0 when it was refused.",
		}),
	}
	for _, c := range []prometheus.Collector{m.reloads, m.generation, m.lastSuccess, m.successful} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	m.successful.Set(1)
	m.set(g)
	return m, nil
}

func (m *reloadMetrics) set(g *generation) {
	m.generation.Set(float64(g.id))
	m.lastSuccess.Set(float64(g.loaded.UnixNano()) / 1e9)
}

func (m *reloadMetrics) succeeded(g *generation) {
	m.reloads.WithLabelValues("success").Inc()
	m.successful.Set(1)
	m.set(g)
}

func (m *reloadMetrics) failed() {
	m.reloads.WithLabelValues("failure").Inc()
	m.successful.Set(0)
}
