package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/portcullis/portcullis/bench/internal/benchimage"
	"github.com/portcullis/portcullis/bench/internal/benchstat"
)

// benchUser is the one user of the registries with token auth on.
const benchUser = "bench"

// tokenScope is the scope of every token the token measurements ask for.
const tokenScope = "repository:bench/x:pull,push"

// authFiles are the signing key and the password of benchUser, made once
// per program run and shared by every registry with auth on.
type authFiles struct {
	keyFile      string
	passwordFile string
	password     string
}

// newAuthFiles makes a signing key with bin's own "auth keygen" and a
// random password file, both in work.
func newAuthFiles(ctx context.Context, bin, work string) (*authFiles, error) {
	a := &authFiles{
		keyFile:      filepath.Join(work, "key.pem"),
		passwordFile: filepath.Join(work, "bench.pw"),
	}
	if out, err := exec.CommandContext(ctx, bin, "auth", "keygen", a.keyFile).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("portcullis auth keygen: %w\n%s", err, out)
	}
	pw := make([]byte, 16)
	_, _ = rand.Read(pw) // never fails on Linux
	a.password = hex.EncodeToString(pw)
	if err := os.WriteFile(a.passwordFile, []byte(a.password+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("password file: %w", err)
	}
	return a, nil
}

// config is Portcullis's configuration with token auth on: one user
// allowed everything, every other setting at its default. The realm is
// derived from --addr.
func (a *authFiles) config() string {
	return strings.Join([]string{
		"version: 1",
		"auth:",
		"  enabled: true",
		"  token:",
		"    signingKeyFile: " + a.keyFile,
		"  users:",
		"    - name: " + benchUser,
		"      passwordFile: " + a.passwordFile,
		"  rules:",
		"    - name: bench-all",
		"      subjects: [user:" + benchUser + "]",
		`      repositories: ["**"]`,
		"      actions: [pull, push, delete]",
		"",
	}, "\n")
}

// credentials are what the client logs in with.
func (a *authFiles) credentials() authn.Authenticator {
	return &authn.Basic{Username: benchUser, Password: a.password}
}

// tokenResult is what one run of the token measurements found on one
// registry. The token rows stay zero with auth off.
type tokenResult struct {
	basic     loop // GET /token with Basic credentials
	anonymous loop // GET /token without credentials
	head      loop // HEAD of a manifest, with a cached bearer token when auth is on
}

// tokenOnce starts a fresh registry of t, pushes one small image to
// bench/x:latest and measures on it: with auth on, tokens requests for a
// token with Basic credentials and tokens without any; then, on both, heads
// HEAD requests for the manifest, with one cached bearer token when auth is
// on. The registry is stopped whatever happens.
func tokenOnce(ctx context.Context, t target, bin, work string, i int, a *authFiles, tokens, heads int) (res tokenResult, err error) {
	syscall.Sync() // as runOnce does
	reg, err := startRegistry(ctx, t, bin, work, i, nil, a)
	defer func() {
		if _, stopErr := reg.stop(); err == nil {
			err = stopErr
		}
	}()
	if err != nil {
		return tokenResult{}, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: time.Minute}

	ref, err := name.ParseReference(reg.addr+"/bench/x:latest", name.Insecure)
	if err != nil {
		return tokenResult{}, err
	}
	img, err := benchimage.New(benchimage.RandomLayer(4 << 10))
	if err != nil {
		return tokenResult{}, err
	}
	opts := []remote.Option{remote.WithTransport(tr)}
	if reg.auth != nil {
		opts = append(opts, remote.WithAuth(reg.auth))
	}
	pusher, err := remote.NewPusher(opts...)
	if err != nil {
		return tokenResult{}, err
	}
	if err := pusher.Push(ctx, ref, img); err != nil {
		return tokenResult{}, fmt.Errorf("push %s: %w", ref, err)
	}

	pid := reg.cmd.Process.Pid
	var bearer string
	if a != nil && t.auth {
		tokenURL := "http://" + reg.addr + "/token?" + url.Values{"service": {"portcullis"}, "scope": {tokenScope}}.Encode()
		basic := func() (*http.Request, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, tokenURL, nil)
			if err == nil {
				req.SetBasicAuth(benchUser, a.password)
			}
			return req, err
		}
		anonymous := func() (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodGet, tokenURL, nil)
		}
		if res.basic, err = timeLoop(client, pid, tokens, 1, basic); err != nil {
			return tokenResult{}, fmt.Errorf("token with Basic auth: %w", err)
		}
		if res.anonymous, err = timeLoop(client, pid, tokens, 1, anonymous); err != nil {
			return tokenResult{}, fmt.Errorf("anonymous token: %w", err)
		}
		if bearer, err = fetchToken(client, basic); err != nil {
			return tokenResult{}, err
		}
	}
	manifestURL := "http://" + reg.addr + "/v2/bench/x/manifests/latest"
	head := func() (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, manifestURL, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		return req, nil
	}
	// Warm up (connection, the verified-token cache, the blob descriptor
	// cache), untimed.
	if _, err := timeLoop(client, pid, 100, 1, head); err != nil {
		return tokenResult{}, fmt.Errorf("HEAD manifest: %w", err)
	}
	if res.head, err = timeLoop(client, pid, heads, 1, head); err != nil {
		return tokenResult{}, fmt.Errorf("HEAD manifest: %w", err)
	}
	return res, nil
}

// fetchToken gets one token with newReq, as a client would before the
// requests it then makes with it.
func fetchToken(client *http.Client, newReq func() (*http.Request, error)) (string, error) {
	req, err := newReq()
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetch token: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("fetch token: %s", resp.Status)
	}
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return "", fmt.Errorf("token response: %w", err)
	}
	if body.Token == "" {
		return "", errors.New("token response without a token")
	}
	return body.Token, nil
}

// tokenMetric is one row of the token table.
type tokenMetric struct {
	label string
	value func(tokenResult) float64
	// onOnly rows have no value with auth off.
	onOnly bool
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// tokenRows are the rows of the token table.
func tokenRows(tokens, heads int) []tokenMetric {
	return []tokenMetric{
		{fmt.Sprintf("%d × GET /token, Basic auth (password check), tokens/s ↑", tokens), func(r tokenResult) float64 { return r.basic.perSec() }, true},
		{"GET /token, Basic auth: latency median, ms ↓", func(r tokenResult) float64 { return millis(r.basic.quantile(0.5)) }, true},
		{"GET /token, Basic auth: registry CPU per token, ms ↓", func(r tokenResult) float64 { return millis(r.basic.cpuPer()) }, true},
		{fmt.Sprintf("%d × GET /token, anonymous (no password), tokens/s ↑", tokens), func(r tokenResult) float64 { return r.anonymous.perSec() }, true},
		{"GET /token, anonymous: registry CPU per token, ms ↓", func(r tokenResult) float64 { return millis(r.anonymous.cpuPer()) }, true},
		{fmt.Sprintf("%d × HEAD manifest: latency median, µs ↓", heads), func(r tokenResult) float64 { return micros(r.head.quantile(0.5)) }, false},
		{"HEAD manifest: latency p99, µs ↓", func(r tokenResult) float64 { return micros(r.head.quantile(0.99)) }, false},
		{"HEAD manifest: registry CPU per request, µs ↓", func(r tokenResult) float64 { return micros(r.head.cpuPer()) }, false},
	}
}

// writeTokenTable prints the token measurements of the off and on targets
// as a Markdown table of medians, each cell with the range of its n runs.
func writeTokenTable(out io.Writer, off, on []tokenResult, tokens, heads, n int) {
	fmt.Fprintf(out, "\n| token service and per-request cost (median of %d runs, min–max) | auth off | auth on | on/off |\n|---|---:|---:|---:|\n", n)
	for _, m := range tokenRows(tokens, heads) {
		vOn := tokenValues(on, m)
		offCell, ratio := "", ""
		if !m.onOnly {
			vOff := tokenValues(off, m)
			offCell = benchstat.Cell(vOff)
			ratio = fmt.Sprintf("%.2f", benchstat.Median(vOn)/benchstat.Median(vOff))
		}
		fmt.Fprintf(out, "| %s | %s | %s | %s |\n", m.label, offCell, benchstat.Cell(vOn), ratio)
	}
}

func tokenValues(rs []tokenResult, m tokenMetric) []float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = m.value(r)
	}
	return v
}
