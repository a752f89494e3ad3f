package e2e

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"golang.org/x/crypto/bcrypt"
)

// reloadConfig is the configuration of TestReload: users from an htpasswd
// file, pushers are those the rules name.
func reloadConfig(dir string, alice, bob []string) string {
	list := func(a []string) string { return "[" + strings.Join(a, ", ") + "]" }
	return fmt.Sprintf(`version: 1
auth:
  enabled: true
  token:
    signingKeyFile: %[1]s/key.pem
  htpasswdFile: %[1]s/htpasswd
  rules:
    - name: alice
      subjects: [user:alice]
      repositories: ["team/**"]
      actions: %[2]s
    - name: bob
      subjects: [user:bob]
      repositories: ["team/**"]
      actions: %[3]s
`, dir, list(alice), list(bob))
}

func writeHtpasswd(t *testing.T, path string, users map[string]string) {
	t.Helper()
	var b strings.Builder
	for name, pw := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%s\n", name, h)
	}
	writeFile(t, path, b.String())
}

// logged returns the registry's log lines whose msg starts with msg.
func logged(t *testing.T, r *Registry, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, rec := range logLines(t, r.Logs()) {
		if m, _ := rec["msg"].(string); strings.HasPrefix(m, msg) {
			out = append(out, rec)
		}
	}
	return out
}

// waitLog waits until n lines whose msg starts with msg were logged and
// returns the last.
func waitLog(t *testing.T, r *Registry, msg string, n int) map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if lines := logged(t, r, msg); len(lines) >= n {
			return lines[len(lines)-1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d lines %q after 20s:\n%s", n, msg, r.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReload changes the htpasswd file and the rules under a running
// registry and sends SIGHUP: docker login and crane see the change at once,
// while an upload under way across the reload completes. Broken
// configurations sent the same way are refused, every problem logged, and
// the running configuration stays in effect.
func TestReload(t *testing.T) {
	t.Parallel()
	docker, crane := tool(t, "docker"), tool(t, "crane")
	dir := t.TempDir()
	run(t, nil, registryBin, "auth", "keygen", filepath.Join(dir, "key.pem"))
	htpasswd, cfgFile := filepath.Join(dir, "htpasswd"), filepath.Join(dir, "config.yml")
	writeHtpasswd(t, htpasswd, map[string]string{"alice": "alice-first", "bob": "bob-pw"})
	writeFile(t, cfgFile, reloadConfig(dir, []string{"pull", "push"}, []string{"pull"}))
	reg := startRegistry(t, startOptions{args: []string{"--config", cfgFile}})
	h := reg.Addr
	hup := func() {
		t.Helper()
		if err := reg.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	dockerEnv := []string{"DOCKER_CONFIG=" + t.TempDir()}
	login := func(user, pw string) error {
		out, err := runStdin(dockerEnv, pw, docker, "login", "-u", user, "--password-stdin", h)
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}
	tarPath := filepath.Join(t.TempDir(), "img.tar")
	img, _ := random.Image(1024, 1)
	writeTarball(t, tarPath, img)
	cranePush := func(user, pw, ref string) error {
		env := []string{"DOCKER_CONFIG=" + t.TempDir()}
		if out, err := runErr(env, crane, "auth", "login", "-u", user, "-p", pw, h); err != nil {
			return fmt.Errorf("crane auth login: %w: %s", err, out)
		}
		if out, err := runErr(env, crane, "push", "--insecure", tarPath, h+"/"+ref); err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}

	if err := login("alice", "alice-first"); err != nil {
		t.Fatalf("docker login before the reload: %v", err)
	}
	if err := cranePush("bob", "bob-pw", "team/bob:v1"); err == nil {
		t.Fatal("bob pushed before the rules let him")
	}

	// An upload by alice, its body arriving slowly, across the reload that
	// takes her push away.
	blob := bytes.Repeat([]byte("portcullis reload "), 8<<10)
	dgst := fmt.Sprintf("sha256:%x", sha256.Sum256(blob))
	tok := bearer(t, reg.URL(), "alice", "alice-first", "repository:team/slow:pull,push")
	req, _ := http.NewRequest(http.MethodPost, reg.URL()+"/v2/team/slow/blobs/uploads/", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %v %v", resp, err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	base, _ := url.Parse(reg.URL() + "/")
	loc = base.ResolveReference(loc)
	q := loc.Query()
	q.Set("digest", dgst)
	loc.RawQuery = q.Encode()
	put, _ := http.NewRequest(http.MethodPut, loc.String(), nil)
	put.Header.Set("Authorization", "Bearer "+tok)
	pw, done := sendPiped(t, put, int64(len(blob)))
	half := len(blob) / 2
	if _, err := pw.Write(blob[:half]); err != nil {
		t.Fatal(err)
	}

	writeHtpasswd(t, htpasswd, map[string]string{"alice": "alice-second", "bob": "bob-pw"})
	writeFile(t, cfgFile, reloadConfig(dir, []string{"pull"}, []string{"pull", "push"}))
	hup()
	waitMetricAs(t, reg, "bob", "bob-pw", "portcullis_config_generation", 2)
	time.Sleep(200 * time.Millisecond)
	if _, err := pw.Write(blob[half:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if resp := <-done; resp == nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload across the reload: %v, want 201", resp)
	} else {
		resp.Body.Close()
	}
	head, _ := http.NewRequest(http.MethodHead, reg.URL()+"/v2/team/slow/blobs/"+dgst, nil)
	head.Header.Set("Authorization", "Bearer "+bearer(t, reg.URL(), "bob", "bob-pw", "repository:team/slow:pull"))
	if resp, err := http.DefaultClient.Do(head); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("blob uploaded across the reload: %v %v, want 200", resp, err)
	}

	if err := login("alice", "alice-first"); err == nil {
		t.Error("docker login with alice's old password succeeded after the reload")
	}
	if err := login("alice", "alice-second"); err != nil {
		t.Errorf("docker login with alice's new password: %v", err)
	}
	if err := cranePush("bob", "bob-pw", "team/bob:v1"); err != nil {
		t.Errorf("bob's push after the rules let him: %v", err)
	}
	if err := cranePush("alice", "alice-second", "team/alice:v1"); err == nil {
		t.Error("alice pushed after the rules took her push away")
	}

	// Broken configurations: every problem is logged, nothing changes.
	broken := []struct {
		config string
		want   []string
	}{
		{config: "version: 1\nhttp:\n  adress: x\n  shutdownGrace: 30 seconds\nauth:\n  enabled: true\n  rulez: []\n",
			want: []string{"http.adress", "http.shutdownGrace", "auth.rulez"}},
		{config: reloadConfig(dir, []string{"fly"}, []string{"pull"}) + "    - subjects: [group:nobody]\n      repositories: [x]\n      actions: [pull]\n",
			want: []string{"auth.rules[0].actions[0]", "auth.rules[2].subjects[0]"}},
		{config: strings.Replace(reloadConfig(dir, []string{"pull"}, []string{"pull", "push"}), "key.pem", "missing-key.pem", 1),
			want: []string{"missing-key.pem"}},
		{config: reloadConfig(dir, []string{"pull"}, []string{"pull", "push"}) + "gc:\n  workers: 3\nstorage:\n  filesystem:\n    rootDirectory: " + dir + "\n",
			want: []string{"gc.workers", "storage.filesystem.rootDirectory", "restart"}},
	}
	for i, b := range broken {
		writeFile(t, cfgFile, b.config)
		hup()
		waitMetricAs(t, reg, "bob", "bob-pw", `portcullis_config_reloads_total{result="failure"}`, float64(i+1))
		// The line is logged before the reload is counted, but read from
		// the process's output after.
		waitLog(t, reg, "configuration reload refused", i+1)
		refusals := logged(t, reg, "configuration reload refused")
		if len(refusals) != i+1 {
			t.Fatalf("%d refusal lines, want %d", len(refusals), i+1)
		}
		problems, _ := json.Marshal(refusals[i]["problems"])
		for _, w := range b.want {
			if !strings.Contains(string(problems), w) {
				t.Errorf("refusal %d does not name %s: %s", i, w, problems)
			}
		}
		if g := refusals[i]["generation"]; g != float64(2) {
			t.Errorf("refusal %d: generation %v, want 2 (kept)", i, g)
		}
	}
	if got := metricAs(t, reg, "bob", "bob-pw", "portcullis_config_generation"); got != 2 {
		t.Errorf("generation %v after refusals, want 2", got)
	}
	if err := login("alice", "alice-second"); err != nil {
		t.Errorf("docker login after the refusals: %v", err)
	}
	if err := cranePush("bob", "bob-pw", "team/bob:v2"); err != nil {
		t.Errorf("bob's push after the refusals: %v", err)
	}
	if lines := logged(t, reg, "configuration reloaded"); len(lines) != 1 || fmt.Sprint(lines[0]["changed"]) != "[auth]" {
		t.Errorf("reload lines %v, want one naming auth", lines)
	}
	if strings.Contains(reg.Logs(), "alice-second") || strings.Contains(reg.Logs(), "alice-first") {
		t.Error("a password reached the logs")
	}
}

// servedCert returns the certificate the registry presents.
func servedCert(t *testing.T, addr string) []byte {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the test compares the certificate itself
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Raw
}

func fileCert(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := pem.Decode(b)
	if p == nil {
		t.Fatalf("%s: no PEM", path)
	}
	return p.Bytes
}

// TestReloadTLS: a certificate renewed in place is served without a
// signal (as cert-manager renews it); a renewal that does not load leaves
// the previous one served; SIGHUP with other files serves them.
func TestReloadTLS(t *testing.T) {
	t.Parallel()
	dir, other := t.TempDir(), t.TempDir()
	certFile, keyFile := writeSelfSigned(t, dir)
	cfgFile := filepath.Join(dir, "config.yml")
	tlsConfig := func(cert, key string) string {
		return fmt.Sprintf("version: 1\nhttp:\n  tls:\n    certFile: %s\n    keyFile: %s\nreload:\n  interval: 1s\n", cert, key)
	}
	writeFile(t, cfgFile, tlsConfig(certFile, keyFile))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // self-signed, compared by hand
	reg := startRegistry(t, startOptions{args: []string{"--config", cfgFile}, scheme: "https", client: client})
	if !bytes.Equal(servedCert(t, reg.Addr), fileCert(t, certFile)) {
		t.Fatal("the configured certificate is not served")
	}

	writeSelfSigned(t, dir) // renewed in place
	renewed := fileCert(t, certFile)
	deadline := time.Now().Add(15 * time.Second)
	for !bytes.Equal(servedCert(t, reg.Addr), renewed) {
		if time.Now().After(deadline) {
			t.Fatal("the renewed certificate is not served 15s after it was written")
		}
		time.Sleep(100 * time.Millisecond)
	}

	writeFile(t, certFile, "not a certificate\n")
	time.Sleep(3 * time.Second) // three checks
	if !bytes.Equal(servedCert(t, reg.Addr), renewed) {
		t.Error("a broken renewal replaced the served certificate")
	}
	if len(logged(t, reg, "tls certificate files changed but do not load")) != 1 {
		t.Error("the broken renewal is not logged once")
	}

	otherCert, otherKey := writeSelfSigned(t, other)
	writeFile(t, cfgFile, tlsConfig(otherCert, otherKey))
	if err := reg.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, reg, "configuration reloaded", 1)
	if !bytes.Equal(servedCert(t, reg.Addr), fileCert(t, otherCert)) {
		t.Error("the certificate of the reloaded configuration is not served")
	}

	// TLS cannot be turned off live.
	writeFile(t, cfgFile, "version: 1\n")
	if err := reg.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	refusal := waitLog(t, reg, "configuration reload refused", 1)
	if problems := fmt.Sprint(refusal["problems"]); !strings.Contains(problems, "http.tls") {
		t.Errorf("refusal does not name http.tls: %s", problems)
	}
	if !bytes.Equal(servedCert(t, reg.Addr), fileCert(t, otherCert)) {
		t.Error("a refused reload changed the served certificate")
	}
}

// TestReloadWatch: with reload.watch on, a changed htpasswd file and a
// changed configuration file take effect without a signal; a broken
// change is refused and logged once, however many checks see it.
func TestReloadWatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	run(t, nil, registryBin, "auth", "keygen", filepath.Join(dir, "key.pem"))
	htpasswd, cfgFile := filepath.Join(dir, "htpasswd"), filepath.Join(dir, "config.yml")
	writeHtpasswd(t, htpasswd, map[string]string{"alice": "alice-first", "bob": "bob-pw"})
	watch := "reload:\n  watch: true\n  interval: 1s\n"
	writeFile(t, cfgFile, reloadConfig(dir, []string{"pull", "push"}, []string{"pull"})+watch)
	reg := startRegistry(t, startOptions{args: []string{"--config", cfgFile}})
	within := func(what string, ok func() bool) {
		t.Helper()
		if !eventually(20*time.Second, ok) {
			t.Fatalf("%s: not after 20s\n%s", what, reg.Logs())
		}
	}
	token := func(user, pw, scope string) string {
		tok, _ := tryBearer(t, reg.URL(), user, pw, scope)
		return tok
	}

	writeHtpasswd(t, htpasswd, map[string]string{"alice": "alice-second", "bob": "bob-pw"})
	within("the new password works", func() bool { return token("alice", "alice-second", "") != "" })
	if token("alice", "alice-first", "") != "" {
		t.Error("the old password still works")
	}

	writeFile(t, cfgFile, "version: 1\nauth:\n  enabled: true\n  rulez: []\n"+watch)
	waitLog(t, reg, "configuration reload refused", 1)
	time.Sleep(3 * time.Second) // three more checks of the same broken file
	if n := len(logged(t, reg, "configuration reload refused")); n != 1 {
		t.Errorf("a broken change was refused %d times, want once", n)
	}

	// bob may push once the fixed file is seen.
	writeFile(t, cfgFile, reloadConfig(dir, []string{"pull", "push"}, []string{"pull", "push"})+watch)
	within("bob's new rule", func() bool {
		return strings.Contains(grantedActions(t, token("bob", "bob-pw", "repository:team/app:pull,push")), "push")
	})
	if n := metricAs(t, reg, "bob", "bob-pw", "portcullis_config_generation"); n != 3 {
		t.Errorf("generation %v, want 3 (start, htpasswd, rules)", n)
	}
}

// grantedActions returns the actions a token grants, as printed.
func grantedActions(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Access []struct{ Actions []string } `json:"access"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(claims.Access)
}
