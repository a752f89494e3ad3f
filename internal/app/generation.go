package app

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"time"

	"github.com/portcullis/portcullis/auth/token"
	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/api"
	"github.com/portcullis/portcullis/internal/front"
	"github.com/portcullis/portcullis/internal/scanner"
	"github.com/portcullis/portcullis/internal/server"
	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/trust"
)

// A generation is what may change while the registry runs, built from one
// configuration: validated, every file it names read and every key parsed.
// The App serves one generation at a time and swaps in the next one whole;
// a request takes the current generation once, at its start, and keeps it
// to its end, so it never sees half of one configuration and half of another.
type generation struct {
	id     uint64
	cfg    *config.Config
	loaded time.Time
	// sums fingerprints each live section with the files it names (read
	// before the generation reads them); watched adds the configuration
	// file, for the file watch.
	sums    map[string][sha256.Size]byte
	watched [sha256.Size]byte
	// auth is nil when auth is off.
	auth     *token.Components
	verifier *trust.Verifier // nil without trust policies
	gates    scanGates
	tls      *server.KeyPair // nil without TLS
	// The routes whose behaviour the configuration decides; registry and
	// api are nil in token-only mode, token without auth.
	token, registry, api http.Handler
}

type generationKey struct{}

// withGeneration returns ctx carrying g.
func withGeneration(ctx context.Context, g *generation) context.Context {
	return context.WithValue(ctx, generationKey{}, g)
}

// generationOf returns the generation a request started under, nil outside
// a request.
func generationOf(ctx context.Context) *generation {
	g, _ := ctx.Value(generationKey{}).(*generation)
	return g
}

// serveGeneration hands each request the current generation.
func (a *App) serveGeneration(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(withGeneration(r.Context(), a.gen.Load())))
	})
}

// route serves a request with the handler its generation has for the route.
func route(pick func(g *generation) http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pick(generationOf(r.Context())).ServeHTTP(w, r)
	})
}

// liveGates are the scan policies of the current generation, for the
// scanner's background work (requests use their own generation's).
type liveGates struct{ a *App }

func (l liveGates) For(repo string) (*scan.RepoGate, bool) {
	g := l.a.gen.Load()
	if g == nil {
		return nil, false
	}
	return g.gates.For(repo)
}

// newGeneration builds the generation of cfg (provisioned and validated)
// after prev (nil at start). It returns every problem it finds, joined:
// files that cannot be read, keys and certificates that do not parse,
// policies that do not compile.
func (a *App) newGeneration(cfg *config.Config, prev *generation) (*generation, error) {
	g := &generation{cfg: cfg, loaded: time.Now(), sums: fingerprints(cfg)}
	var errs []error
	var err error
	if cfg.Auth.Enabled {
		if g.auth, err = a.buildAuth(cfg, prev); err != nil {
			errs = append(errs, err)
		} else {
			g.token = g.auth.Service
		}
	}
	if g.verifier, err = a.buildVerifier(cfg); err != nil {
		errs = append(errs, err)
	}
	if g.gates, err = compileScanGates(cfg.Scan); err != nil {
		errs = append(errs, err)
	}
	if t := cfg.HTTP.TLS; t.Enabled() {
		if g.tls, err = server.LoadKeyPair(t.CertFile, t.KeyFile); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if a.core != nil {
		if err := a.buildRoutes(g); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// buildRoutes builds g's /v2/ front handler and /api/v1/ handler over the
// registry core.
func (a *App) buildRoutes(g *generation) error {
	c := a.core
	opts := front.Options{Events: c.events, Log: a.log, Reserved: []string{scanner.DBRepository},
		Cache: a.caches, Collection: a.marks, Pulls: a.pulls, PullSlots: c.pullSlots, Blobs: c.blobs,
		Barriers: a.barriers, UploadOffsets: a.offsets}
	apiOpts := api.Options{Documents: a.scanner, Manifests: c.content, Log: a.log, Collections: a.collector}
	if g.auth != nil {
		opts.Guard = &front.Guard{Auth: g.auth.Controller, Tags: g.auth.Policy, Repos: c.repos, Audit: a.audit}
		apiOpts.Auth = g.auth.Controller
	}
	gate, err := a.buildAdmission(g)
	if err != nil {
		return err
	}
	if gate != nil {
		opts.Admission, apiOpts.Verdicts = gate, gate
	}
	if a.caches != nil {
		apiOpts.Caches = a.caches
	}
	if a.replicator != nil {
		apiOpts.Replication = a.replicator
	}
	apiOpts.Stored, apiOpts.Scans, apiOpts.Audit = c.stored, a.scanner, a.audit
	if g.auth != nil && g.auth.Robots != nil {
		apiOpts.Robots = g.auth.Robots
	}
	fr, err := front.New(a.dist, c.refs, c.repos, a.driver, opts)
	if err != nil {
		return err
	}
	apiOpts.Withheld = fr.Withheld
	apiHandler, err := api.New(apiOpts)
	if err != nil {
		return err
	}
	g.registry, g.api = fr, apiHandler
	return nil
}

// liveSection is a part of the configuration a reload may change, with
// the files it names.
type liveSection struct {
	value any
	files []string
}

// liveSections returns cfg's live sections by key path.
func liveSections(cfg *config.Config) map[string]liveSection {
	au := cfg.Auth
	authFiles := append([]string{au.Token.SigningKeyFile, au.HtpasswdFile}, au.Token.VerificationKeyFiles...)
	for _, u := range au.Users {
		authFiles = append(authFiles, u.PasswordFile)
	}
	tr := cfg.Trust
	trustFiles := []string{tr.TrustedRootFile}
	for _, k := range tr.Keys {
		trustFiles = append(trustFiles, k.File)
	}
	for _, s := range tr.TrustStores {
		trustFiles = append(trustFiles, s.Files...)
	}
	var hookFiles []string
	for _, w := range cfg.Admission.Webhooks {
		hookFiles = append(hookFiles, w.CAFile, w.SecretFile, w.CertFile, w.KeyFile)
	}
	return map[string]liveSection{
		"auth":      {au, authFiles},
		"trust":     {tr, trustFiles},
		"admission": {cfg.Admission, hookFiles},
		"scan":      {cfg.Scan, nil},
		"http.tls":  {cfg.HTTP.TLS, []string{cfg.HTTP.TLS.CertFile, cfg.HTTP.TLS.KeyFile}},
		"reload":    {cfg.Reload, nil},
	}
}

// fingerprints sums each live section of cfg with the contents of the
// files it names (a file that cannot be read counts as its error).
func fingerprints(cfg *config.Config) map[string][sha256.Size]byte {
	out := map[string][sha256.Size]byte{}
	for name, s := range liveSections(cfg) {
		h := sha256.New()
		b, _ := json.Marshal(s.value)
		h.Write(b)
		for _, f := range s.files {
			if f == "" {
				continue
			}
			h.Write([]byte("\x00" + f + "\x00"))
			data, err := os.ReadFile(f)
			if err != nil {
				h.Write([]byte(err.Error()))
				continue
			}
			h.Write(data)
		}
		var sum [sha256.Size]byte
		copy(sum[:], h.Sum(nil))
		out[name] = sum
	}
	return out
}
