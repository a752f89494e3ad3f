// Command admission measures what trust admission adds to a tag PUT: the
// same manifest is tagged over and over on a registry whose repository is
// under an enforce policy (the digest signed with cosign beforehand, so the
// verdict is cached after the first PUT) and on one with no policy.
//
//	go run ./bench/admission -n 500
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func main() {
	n := flag.Int("n", 500, "tag PUTs per registry")
	bin := flag.String("portcullis", "", "registry binary (default: build ./cmd/registry)")
	cosign := flag.String("cosign", filepath.Join(os.Getenv("HOME"), ".cache/portcullis-tools/bin/cosign"), "cosign binary")
	flag.Parse()
	if err := run(*n, *bin, *cosign); err != nil {
		fmt.Fprintln(os.Stderr, "admission bench:", err)
		os.Exit(1)
	}
}

func run(n int, bin, cosign string) error {
	work, err := os.MkdirTemp("", "admission-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if bin == "" {
		bin = filepath.Join(work, "registry")
		if out, err := exec.Command("go", "build", "-o", bin, "./cmd/registry").CombinedOutput(); err != nil {
			return fmt.Errorf("build: %v\n%s", err, out)
		}
	}
	keygen := exec.Command(cosign, "generate-key-pair")
	keygen.Dir = work
	keygen.Env = append(os.Environ(), "COSIGN_PASSWORD=bench")
	if out, err := keygen.CombinedOutput(); err != nil {
		return fmt.Errorf("cosign generate-key-pair: %v\n%s", err, out)
	}
	policy := fmt.Sprintf("version: 1\nlog:\n  accessLog: false\ntrust:\n  keys:\n    - name: ci\n      file: %s/cosign.pub\n  policies:\n    - name: prod\n      repositories: [\"prod/**\"]\n      mode: enforce\n      signers: [ci]\n", work)
	plain := "version: 1\nlog:\n  accessLog: false\n"
	results := map[string][]time.Duration{}
	for _, c := range []struct{ name, cfg string }{{"policy off", plain}, {"enforce, cached verdict", policy}, {"policy off (again)", plain}} {
		lat, err := measure(work, bin, cosign, c.cfg, n)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		results[c.name] = lat
		fmt.Printf("%-26s p50 %8s  p90 %8s  p99 %8s\n", c.name, pct(lat, 50), pct(lat, 90), pct(lat, 99))
	}
	off := append(results["policy off"], results["policy off (again)"]...)
	on := results["enforce, cached verdict"]
	fmt.Printf("added at p50: %s\n", pct(on, 50)-pct(off, 50))
	return nil
}

func measure(work, bin, cosign, cfg string, n int) ([]time.Duration, error) {
	dir, err := os.MkdirTemp(work, "reg-")
	if err != nil {
		return nil, err
	}
	cfgFile := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "serve", "--config", cfgFile, "--addr", addr, "--data", filepath.Join(dir, "data"))
	logf, _ := os.Create(filepath.Join(dir, "log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }()
	base := "http://" + addr
	for i := 0; ; i++ {
		if resp, err := http.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if i > 200 {
			return nil, fmt.Errorf("registry not ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
	img, err := random.Image(1024, 2)
	if err != nil {
		return nil, err
	}
	d, _ := img.Digest()
	ref, err := name.ParseReference(addr+"/prod/app@"+d.String(), name.Insecure)
	if err != nil {
		return nil, err
	}
	if err := remote.Write(ref, img); err != nil {
		return nil, err
	}
	sign := exec.Command(cosign, "sign", "--key", filepath.Join(work, "cosign.key"), "--tlog-upload=false",
		"--use-signing-config=false", "--allow-http-registry", "-y", ref.String())
	sign.Env = append(os.Environ(), "COSIGN_PASSWORD=bench")
	if out, err := sign.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("cosign sign: %v\n%s", err, out)
	}
	raw, _ := img.RawManifest()
	mt, _ := img.MediaType()
	lat := make([]time.Duration, 0, n)
	ctx := context.Background()
	for i := 0; i < n+20; i++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, base+"/v2/prod/app/manifests/latest", bytes.NewReader(raw))
		req.Header.Set("Content-Type", string(mt))
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return nil, fmt.Errorf("tag PUT: %d", resp.StatusCode)
		}
		if i >= 20 { // warm-up
			lat = append(lat, time.Since(start))
		}
	}
	return lat, nil
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)].Round(10 * time.Microsecond)
}
