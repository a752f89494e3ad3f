package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
)

// authSetup is a registry with auth on: users alice (group devs: pull, push
// and delete on team/** and conformance/**) and bob (pull on team/**), a
// robot "release" that alone may create and move v* tags, and an audit log.
type authSetup struct {
	reg          *Registry
	robotSecret  string
	auditLog     string
	alice, bobPW string
}

func startAuthRegistry(t *testing.T, b backend) *authSetup {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "key.pem")
	run(t, nil, registryBin, "auth", "keygen", key)
	writeFile(t, filepath.Join(dir, "alice"), "alice-pw-123")
	writeFile(t, filepath.Join(dir, "bob"), "bob-pw-456")
	s := &authSetup{auditLog: filepath.Join(dir, "audit.log"), alice: "alice-pw-123", bobPW: "bob-pw-456"}
	authCfg := fmt.Sprintf(`auth:
  enabled: true
  token:
    signingKeyFile: %[1]s/key.pem
  users:
    - name: alice
      passwordFile: %[1]s/alice
    - name: bob
      passwordFile: %[1]s/bob
  groups:
    - name: devs
      members: [alice]
  catalog: [group:devs]
  rules:
    - name: devs-team
      subjects: [group:devs]
      repositories: ["team/**", "conformance/**"]
      actions: [pull, push, delete]
    - name: bob-pull
      subjects: [user:bob]
      repositories: ["team/**"]
      actions: [pull]
    - name: release-robot
      subjects: [robot:release]
      repositories: ["team/**"]
      actions: [pull, push]
  tagRules:
    - name: releases
      repositories: ["team/**"]
      tags: ["v*"]
      create: [robot:release]
      overwrite: [robot:release]
  rateLimit:
    addressFailures: 5
    backoff: 30s
  audit:
    file: %[1]s/audit.log
`, dir)
	o := b.options(t, authCfg)
	o.dataDir = t.TempDir()
	// The robot is created before start-up, in the storage backend.
	cfgFile := filepath.Join(dir, "config.yml")
	writeFile(t, cfgFile, o.config)
	out, err := runErr(o.env, registryBin, "robot", "create", "release", "--repo", "team/**", "--action", "pull,push",
		"--config", cfgFile, "--data", o.dataDir)
	if err != nil {
		t.Fatalf("robot create: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`secret: (pcr_\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("robot create printed no secret:\n%s", out)
	}
	s.robotSecret = m[1]
	s.reg = startRegistry(t, o)
	return s
}

func TestAuthDocker(t *testing.T) {
	t.Parallel()
	docker := tool(t, "docker")
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			s := startAuthRegistry(t, b)
			h := s.reg.Addr
			env := []string{"DOCKER_CONFIG=" + t.TempDir()}
			login := func(user, pw string) (string, error) {
				cmd := []string{"login", "-u", user, "--password-stdin", h}
				return runStdin(env, pw, docker, cmd...)
			}
			if out, err := login("alice", "wrong"); err == nil {
				t.Fatalf("docker login with a wrong password succeeded: %s", out)
			}
			if out, err := login("alice", s.alice); err != nil {
				t.Fatalf("docker login: %v\n%s", err, out)
			}
			tarPath := filepath.Join(t.TempDir(), "rootfs.tar")
			writeRootfsTar(t, tarPath, "hello "+h)
			image := h + "/team/app"
			id := strings.TrimSpace(run(t, env, docker, "import", tarPath, image+":latest"))
			t.Cleanup(func() { _, _ = runErr(env, docker, "rmi", "-f", id) })
			run(t, env, docker, "push", image+":latest")

			// The tag rule: only the release robot creates v* tags.
			run(t, env, docker, "tag", image+":latest", image+":v1")
			out, err := runErr(env, docker, "push", image+":v1")
			if err == nil || !strings.Contains(out, "only robot:release may create") {
				t.Errorf("alice pushed a release tag: %v\n%s", err, out)
			}
			if out, err := login("robot+release", s.robotSecret); err != nil {
				t.Fatalf("robot login: %v\n%s", err, out)
			}
			run(t, env, docker, "push", image+":v1")

			// bob may pull, not push.
			if out, err := login("bob", s.bobPW); err != nil {
				t.Fatalf("bob login: %v\n%s", err, out)
			}
			run(t, env, docker, "rmi", "-f", image+":v1", image+":latest")
			run(t, env, docker, "pull", image+":v1")
			run(t, env, docker, "tag", image+":v1", image+":bobs")
			if out, err := runErr(env, docker, "push", image+":bobs"); err == nil {
				t.Errorf("bob pushed: %s", out)
			}
			// Outside team/ bob sees nothing.
			if out, err := runErr(env, docker, "pull", h+"/other/app:v1"); err == nil {
				t.Errorf("bob pulled outside his rules: %s", out)
			}
			audit, _ := os.ReadFile(s.auditLog)
			for _, want := range []string{`"kind":"authentication"`, `"result":"denied"`, `"action":"push"`} {
				if !strings.Contains(string(audit), want) {
					t.Errorf("audit log lacks %s", want)
				}
			}
			if strings.Contains(string(audit), s.alice) || strings.Contains(string(audit), s.robotSecret) ||
				strings.Contains(s.reg.Logs(), s.alice) || strings.Contains(s.reg.Logs(), s.robotSecret) {
				t.Error("a secret reached the audit log or the logs")
			}
		})
	}
}

// TestAuthClients logs in with every other real client and checks that
// each is allowed and denied exactly as the rules say.
func TestAuthClients(t *testing.T) {
	t.Parallel()
	crane, oras, regctl := tool(t, "crane"), tool(t, "oras"), tool(t, "regctl")
	skopeo, podman, helm := tool(t, "skopeo"), tool(t, "podman"), tool(t, "helm")
	s := startAuthRegistry(t, backends()[0])
	h := s.reg.Addr
	home := t.TempDir()
	env := []string{"HOME=" + home, "DOCKER_CONFIG=" + filepath.Join(home, ".docker"), "REGISTRY_AUTH_FILE=" + filepath.Join(home, "auth.json")}

	img, _ := random.Image(2048, 2)
	tarPath := filepath.Join(t.TempDir(), "img.tar")
	writeTarball(t, tarPath, img)

	t.Run("crane", func(t *testing.T) {
		if out, err := runErr(env, crane, "push", "--insecure", tarPath, h+"/team/crane:latest"); err == nil {
			t.Errorf("anonymous push accepted: %s", out)
		}
		run(t, env, crane, "auth", "login", "--insecure", h, "-u", "alice", "-p", s.alice)
		run(t, env, crane, "push", "--insecure", tarPath, h+"/team/crane:latest")
		if got := strings.TrimSpace(run(t, env, crane, "digest", "--insecure", h+"/team/crane:latest")); got != imageDigest(t, img) {
			t.Errorf("digest %s", got)
		}
		if out, err := runErr(env, crane, "push", "--insecure", tarPath, h+"/elsewhere/crane:latest"); err == nil {
			t.Errorf("alice pushed outside her rules: %s", out)
		}
		if got := run(t, env, crane, "catalog", "--insecure", h); !strings.Contains(got, "team/crane") {
			t.Errorf("catalog for devs: %q", got)
		}
	})
	t.Run("skopeo", func(t *testing.T) {
		run(t, env, skopeo, "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
			"--src-creds", "bob:"+s.bobPW, "--dest-creds", "alice:"+s.alice,
			"docker://"+h+"/team/crane:latest", "docker://"+h+"/team/skopeo:latest")
		if out, err := runErr(env, skopeo, "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
			"--src-creds", "bob:"+s.bobPW, "--dest-creds", "bob:"+s.bobPW,
			"docker://"+h+"/team/crane:latest", "docker://"+h+"/team/bob:latest"); err == nil {
			t.Errorf("bob pushed with skopeo: %s", out)
		}
	})
	t.Run("podman", func(t *testing.T) {
		runStdinOK(t, env, s.alice, podman, "login", "--tls-verify=false", "-u", "alice", "--password-stdin", h)
		run(t, env, podman, "pull", "--tls-verify=false", h+"/team/skopeo:latest")
		t.Cleanup(func() { _, _ = runErr(env, podman, "rmi", "-f", h+"/team/skopeo:latest", h+"/team/podman:latest") })
		run(t, env, podman, "tag", h+"/team/skopeo:latest", h+"/team/podman:latest")
		run(t, env, podman, "push", "--tls-verify=false", h+"/team/podman:latest")
		runStdinOK(t, env, s.bobPW, podman, "login", "--tls-verify=false", "-u", "bob", "--password-stdin", h)
		if out, err := runErr(env, podman, "push", "--tls-verify=false", h+"/team/podman:latest"); err == nil {
			t.Errorf("bob pushed with podman: %s", out)
		}
	})
	t.Run("oras", func(t *testing.T) {
		work := t.TempDir()
		writeFile(t, filepath.Join(work, "sbom.json"), `{"sbom":true}`)
		runStdinOK(t, env, s.alice, oras, "login", "--plain-http", "-u", "alice", "--password-stdin", h)
		runIn(t, work, oras, "attach", "--plain-http", "--registry-config", filepath.Join(home, ".docker", "config.json"),
			"--artifact-type", "application/spdx+json", h+"/team/crane:latest", "sbom.json")
		out := run(t, env, oras, "discover", "--plain-http", "--format", "json", h+"/team/crane:latest")
		if !strings.Contains(out, "application/spdx+json") {
			t.Errorf("oras discover with auth: %s", out)
		}
	})
	t.Run("regctl", func(t *testing.T) {
		run(t, env, regctl, "registry", "set", "--tls", "disabled", h)
		runStdinOK(t, env, s.bobPW, regctl, "registry", "login", "-u", "bob", "--pass-stdin", h)
		if got := strings.TrimSpace(run(t, env, regctl, "image", "digest", h+"/team/crane:latest")); got != imageDigest(t, img) {
			t.Errorf("regctl digest %s", got)
		}
		// The referrers API answers bob (pull) too.
		if out := run(t, env, regctl, "artifact", "list", h+"/team/crane:latest", "--format", "body"); !strings.Contains(out, "application/spdx+json") {
			t.Errorf("regctl referrers with auth: %s", out)
		}
		if out, err := runErr(env, regctl, "image", "copy", h+"/team/crane:latest", h+"/team/regctl:latest"); err == nil {
			t.Errorf("bob copied into team/: %s", out)
		}
	})
	t.Run("helm", func(t *testing.T) {
		chart, _ := filepath.Abs("../charts/portcullis")
		pkgDir := t.TempDir()
		run(t, env, helm, "package", chart, "--destination", pkgDir)
		matches, _ := filepath.Glob(filepath.Join(pkgDir, "portcullis-*.tgz"))
		if len(matches) != 1 {
			t.Fatalf("helm package wrote %v", matches)
		}
		runStdinOK(t, env, s.alice, helm, "registry", "login", "--insecure", "-u", "alice", "--password-stdin", h)
		run(t, env, helm, "push", matches[0], "oci://"+h+"/team/charts", "--plain-http")
		// bob may not push charts.
		runStdinOK(t, env, s.bobPW, helm, "registry", "login", "--insecure", "-u", "bob", "--password-stdin", h)
		if out, err := runErr(env, helm, "push", matches[0], "oci://"+h+"/team/bobcharts", "--plain-http"); err == nil {
			t.Errorf("bob pushed a chart: %s", out)
		}
		// The version is the packaged chart's, whatever Chart.yaml says today.
		version := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(matches[0]), "portcullis-"), ".tgz")
		run(t, env, helm, "pull", "oci://"+h+"/team/charts/portcullis", "--version", version, "--plain-http", "--destination", t.TempDir())
	})
}

// TestAuthConformance runs the conformance suite with credentials.
func TestAuthConformance(t *testing.T) {
	t.Parallel()
	bin := tool(t, "conformance.test")
	s := startAuthRegistry(t, backends()[0])
	env := []string{
		"OCI_REGISTRY=" + s.reg.Addr, "OCI_TLS=disabled",
		"OCI_REPO1=conformance/one", "OCI_REPO2=conformance/two", "OCI_VERSION=1.1",
		"OCI_USERNAME=alice", "OCI_PASSWORD=" + s.alice,
		"OCI_API_PULL=true", "OCI_API_PUSH=true", "OCI_API_TAGS_LIST=true", "OCI_API_TAGS_DELETE=true",
		"OCI_API_MANIFESTS_DELETE=true", "OCI_API_BLOBS_DELETE=true", "OCI_API_BLOBS_UPLOAD_CANCEL=true",
		"OCI_API_REFERRER=true", "OCI_RESULTS_DIR=" + t.TempDir(),
	}
	out, err := runErr(env, bin)
	if err != nil {
		t.Errorf("conformance with auth: %v", err)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "failed test") {
			t.Errorf("%s", line)
		}
	}
	if m := regexp.MustCompile(`FAIL\.+:\s+(\d+)`).FindStringSubmatch(out); m == nil || m[1] != "0" {
		t.Errorf("conformance with auth: FAIL count %v", m)
	}
}

// TestAuthAttacks: a token for one repository used on another, more scope
// than granted, and a password-guessing run, against the binary.
func TestAuthAttacks(t *testing.T) {
	t.Parallel()
	s := startAuthRegistry(t, backends()[0])
	base := s.reg.URL()
	getToken := func(user, pw, scope string, client *http.Client) (int, string) {
		req, _ := http.NewRequest("GET", base+"/token?service=portcullis&scope="+url.QueryEscape(scope), nil)
		req.SetBasicAuth(user, pw)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var tok struct{ Token string }
		_ = json.NewDecoder(resp.Body).Decode(&tok)
		return resp.StatusCode, tok.Token
	}
	get := func(path, tok string) int {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	status, tok := getToken("alice", s.alice, "repository:team/a:pull", http.DefaultClient)
	if status != 200 || tok == "" {
		t.Fatalf("token: %d", status)
	}
	if got := get("/v2/team/a/tags/list", tok); got != http.StatusNotFound {
		t.Errorf("token for team/a on team/a: %d, want 404 (allowed, no such repo)", got)
	}
	if got := get("/v2/team/b/tags/list", tok); got != http.StatusUnauthorized {
		t.Errorf("token for team/a used on team/b: %d, want 401", got)
	}
	// More scope than granted: bob asks for push, the token carries pull only.
	_, bobTok := getToken("bob", s.bobPW, "repository:team/a:pull,push", http.DefaultClient)
	req, _ := http.NewRequest("POST", base+"/v2/team/a/blobs/uploads/", nil)
	req.Header.Set("Authorization", "Bearer "+bobTok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("bob's pull token used to push: %d", resp.StatusCode)
	}
	// A tampered token.
	parts := strings.Split(tok, ".")
	if len(parts) == 3 {
		tampered := parts[0] + "." + parts[1] + "x." + parts[2]
		if got := get("/v2/team/a/tags/list", tampered); got != http.StatusUnauthorized {
			t.Errorf("tampered token: %d", got)
		}
	}

	// 1,000 wrong passwords from 127.0.0.2: the limiter holds; the right
	// password then works for alice from 127.0.0.1.
	attacker := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}).DialContext}}
	limited := 0
	start := time.Now()
	for i := 0; i < 1000; i++ {
		status, _ := getToken("alice", fmt.Sprintf("guess-%d", i), "", attacker)
		switch status {
		case http.StatusTooManyRequests:
			limited++
		case http.StatusOK:
			t.Fatalf("guess %d accepted", i)
		}
	}
	if limited < 990 {
		t.Errorf("only %d of 1000 guesses were rate limited", limited)
	}
	if d := time.Since(start); d > 60*time.Second {
		t.Errorf("1000 rejected guesses took %v: the limiter should answer without checking passwords", d)
	}
	if status, _ := getToken("alice", s.alice, "", attacker); status != http.StatusTooManyRequests {
		t.Errorf("right password from the locked-out address: %d, want 429", status)
	}
	if status, _ := getToken("alice", s.alice, "repository:team/a:pull", http.DefaultClient); status != 200 {
		t.Errorf("alice from her own address after the attack: %d, want 200", status)
	}
}

func writeRootfsTar(t *testing.T, path, content string) {
	t.Helper()
	writeFile(t, path, string(tarOf(t, map[string]string{"hello.txt": content})))
}

// runStdin runs a command with input on stdin.
func runStdin(env []string, input, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(input)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func runStdinOK(t *testing.T, env []string, input, name string, args ...string) {
	t.Helper()
	if out, err := runStdin(env, input, name, args...); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
}

// TestAuthAdminCommands: robot revocation takes effect on the running
// server, policy explain names the deciding rule, and --token-only serves
// the token service alone.
func TestAuthAdminCommands(t *testing.T) {
	t.Parallel()
	s := startAuthRegistry(t, backends()[0])
	cfgFile := filepath.Join(filepath.Dir(s.auditLog), "config.yml")
	cfgBytes, err := os.ReadFile(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	cfgOut := string(cfgBytes)
	tokenStatus := func(base, user, pw string) int {
		req, _ := http.NewRequest("GET", base+"/token?service=portcullis&scope=repository:team/a:pull", nil)
		req.SetBasicAuth(user, pw)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := tokenStatus(s.reg.URL(), "robot+release", s.robotSecret); got != 200 {
		t.Fatalf("robot login: %d", got)
	}
	list := run(t, nil, registryBin, "robot", "list", "--config", cfgFile, "--data", s.reg.DataDir)
	if !strings.Contains(list, "release") || strings.Contains(list, s.robotSecret) {
		t.Errorf("robot list: %s", list)
	}
	run(t, nil, registryBin, "robot", "revoke", "release", "--config", cfgFile, "--data", s.reg.DataDir)
	if got := tokenStatus(s.reg.URL(), "robot+release", s.robotSecret); got != http.StatusUnauthorized {
		t.Errorf("revoked robot login: %d, want 401", got)
	}

	// A denial exits 1 (scripts test it); an allowed scope exits 0.
	out, err := runErr(nil, registryBin, "policy", "explain", "--config", cfgFile, "--subject", "user:bob", "--scope", "repository:team/app:pull,push")
	var ee *exec.ExitError
	if !errorsAs(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out, `rule "bob-pull"`) || !strings.Contains(out, "push    denied") {
		t.Errorf("policy explain of a denial: %v\n%s", err, out)
	}
	run(t, nil, registryBin, "policy", "explain", "--config", cfgFile, "--subject", "user:bob", "--scope", "repository:team/app:pull")

	// --token-only: the token service without the registry.
	o := startOptions{config: cfgOut, dataDir: t.TempDir(), args: []string{"--token-only"}}
	tok := startRegistry(t, o)
	if got := tokenStatus(tok.URL(), "alice", s.alice); got != 200 {
		t.Errorf("token-only login: %d", got)
	}
	resp, err := http.Get(tok.URL() + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("token-only serves /v2/: %d", resp.StatusCode)
	}
}
