package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestLogsOfANormalSession logs in, pushes and pulls with crane and docker at log
// level info and checks what an operator reads: no line above info, one
// request id per line, durations named with their unit.
func TestLogsOfANormalSession(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			testLogsOfANormalSession(t, b)
		})
	}
}

func testLogsOfANormalSession(t *testing.T, b backend) {
	crane := tool(t, "crane")
	auth := usersAliceAndBob(t, `    - name: alice-pushes
      subjects: [user:alice]
      repositories: ["**"]
      actions: [pull, push]
`)
	reg := startRegistry(t, b.options(t, "log:\n  level: info\n"+auth))
	env := []string{"DOCKER_CONFIG=" + t.TempDir()}
	if out, err := runStdin(env, "alice-pw", crane, "auth", "login", reg.Addr, "-u", "alice", "--password-stdin"); err != nil {
		t.Fatalf("crane auth login: %v\n%s", err, out)
	}
	image := reg.Addr + "/team/app:v1"
	run(t, env, crane, "append", "--new_tag", image, "--new_layer", writeLayer(t))
	run(t, env, crane, "pull", image, filepath.Join(t.TempDir(), "image.tar"))

	// The same with docker: login (the 401 challenge first), push, pull.
	docker := tool(t, "docker")
	denv := []string{"DOCKER_CONFIG=" + t.TempDir()}
	if out, err := runStdin(denv, "alice-pw", docker, "login", "-u", "alice", "--password-stdin", reg.Addr); err != nil {
		t.Fatalf("docker login: %v\n%s", err, out)
	}
	tarPath := filepath.Join(t.TempDir(), "rootfs.tar")
	writeRootfsTar(t, tarPath, "logs "+reg.Addr)
	dimage := reg.Addr + "/team/docker:v1"
	id := strings.TrimSpace(run(t, denv, docker, "import", tarPath, dimage))
	t.Cleanup(func() { _, _ = runErr(denv, docker, "rmi", "-f", id) })
	run(t, denv, docker, "push", dimage)
	run(t, denv, docker, "rmi", dimage)
	run(t, denv, docker, "pull", dimage)

	access, listening := 0, false
	for _, line := range logLines(t, reg.Logs()) {
		if line["msg"] == "listening" {
			// The start-up line says what is in effect.
			listening = true
			for _, k := range []string{"storage", "config", "auth", "metrics"} {
				if s, _ := line[k].(string); s == "" {
					t.Errorf("the start-up line does not say which %s is in effect: %v", k, line)
				}
			}
		}
		if lvl := line["level"]; lvl != "INFO" && lvl != "DEBUG" {
			t.Errorf("a %v line in a normal session: %v", lvl, line)
		}
		ids := 0
		for k := range line {
			if strings.Contains(strings.ReplaceAll(k, ".", "_"), "request_id") {
				ids++
			}
		}
		if ids > 1 {
			t.Errorf("a line with %d request ids: %v", ids, line)
		}
		if line["msg"] != "request" {
			continue
		}
		access++
		if _, ok := line["duration_ms"].(float64); !ok {
			t.Errorf("access line without a duration_ms number: %v", line)
		}
		if _, ok := line["duration"]; ok {
			t.Errorf("access line with a duration of no unit: %v", line)
		}
		if line["request_id"] == nil {
			t.Errorf("access line without request_id: %v", line)
		}
	}
	if access < 5 || !listening {
		t.Errorf("%d access lines for a login, push and pull; start-up line: %v", access, listening)
	}
}

// logLines parses JSON log output, one object per line; a line that is not
// JSON fails the test.
func logLines(t *testing.T, logs string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// writeLayer writes a small layer tarball for crane append.
func writeLayer(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "layer.tar")
	writeRootfsTar(t, p, "hello "+t.Name())
	return p
}

// scrape GETs /metrics from base with the given Authorization header ("":
// none) and returns the status and body.
func scrape(t *testing.T, base, authorization string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// scrapeMetrics returns reg's exposition, scraped as alice (with
// password alice-pw, as usersAliceAndBob sets them up: the default
// auth.catalog, authenticated, lets her), which a registry with auth off
// ignores. A refused scrape fails the test.
func scrapeMetrics(t *testing.T, reg *Registry) string {
	t.Helper()
	return scrapeMetricsAs(t, reg, "alice", "alice-pw")
}

// scrapeMetricsAs reads /metrics with user's basic credentials and fails
// the test on a refused scrape.
func scrapeMetricsAs(t *testing.T, reg *Registry, user, pw string) string {
	t.Helper()
	code, body := scrape(t, reg.URL(), basic(user, pw))
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	return body
}

func basic(user, pw string) string {
	req, _ := http.NewRequest(http.MethodGet, "/", nil)
	req.SetBasicAuth(user, pw)
	return req.Header.Get("Authorization")
}

// TestMetricsBehindAuth checks /metrics on the registry port with auth on:
// an anonymous scrape, a wrong password and a subject not listed in
// auth.catalog are refused; a token with the catalog scope and the basic
// credentials of a catalog subject (Prometheus' basic_auth) are served.
func TestMetricsBehindAuth(t *testing.T) {
	t.Parallel()
	auth := usersAliceAndBob(t, `    - name: alice-pushes
      subjects: [user:alice]
      repositories: ["**"]
      actions: [pull, push]
  catalog: [user:alice, robot:metrics]
`)
	o := startOptions{config: "version: 1\n" + auth, dataDir: t.TempDir()}
	cfgFile := filepath.Join(t.TempDir(), "config.yml")
	writeFile(t, cfgFile, o.config)
	out := run(t, nil, registryBin, "robot", "create", "metrics", "--repo", "none", "--action", "pull",
		"--config", cfgFile, "--data", o.dataDir)
	m := regexp.MustCompile(`secret: (pcr_\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("robot create printed no secret:\n%s", out)
	}
	reg := startRegistry(t, o)
	for _, c := range []struct {
		name, authorization string
		want                int
	}{
		{"anonymous", "", http.StatusUnauthorized},
		{"wrong password", basic("alice", "nope"), http.StatusUnauthorized},
		{"not in catalog", basic("bob", "bob-pw"), http.StatusForbidden},
		{"repository token", "Bearer " + bearerOrFail(t, reg.URL(), "alice", "alice-pw", "repository:team/app:pull"), http.StatusUnauthorized},
		{"catalog token", "Bearer " + bearerOrFail(t, reg.URL(), "alice", "alice-pw", url.QueryEscape("registry:catalog:*")), http.StatusOK},
		{"catalog subject", basic("alice", "alice-pw"), http.StatusOK},
		{"catalog robot", basic("robot+metrics", m[1]), http.StatusOK},
	} {
		code, body := scrape(t, reg.URL(), c.authorization)
		if code != c.want {
			t.Errorf("%s: status %d, want %d: %s", c.name, code, c.want, body)
		}
		if code == http.StatusOK && !strings.Contains(body, "portcullis_http_requests_total") {
			t.Errorf("%s: no portcullis_http_requests_total in the exposition", c.name)
		}
		if code != http.StatusOK && strings.Contains(body, "portcullis_") {
			t.Errorf("%s: a refused scrape got metrics", c.name)
		}
	}
	// A bearer token without the scope gets none from the token service.
	if tok, _ := tryBearer(t, reg.URL(), "bob", "bob-pw", url.QueryEscape("registry:catalog:*")); tok != "" {
		if code, _ := scrape(t, reg.URL(), "Bearer "+tok); code == http.StatusOK {
			t.Error("bob's token without the catalog scope was served metrics")
		}
	}
	if strings.Contains(reg.Logs(), "alice-pw") || strings.Contains(reg.Logs(), m[1]) {
		t.Error("a password reached the logs")
	}
}

func bearerOrFail(t *testing.T, base, user, pw, scope string) string {
	t.Helper()
	tok, code := tryBearer(t, base, user, pw, scope)
	if tok == "" {
		t.Fatalf("token for %s: %d", scope, code)
	}
	return tok
}

// TestMetricsAddr checks http.metricsAddr: /metrics is served there to an
// anonymous scrape (auth on), and no longer on the registry port.
func TestMetricsAddr(t *testing.T) {
	t.Parallel()
	maddr := freeAddr(t)
	auth := usersAliceAndBob(t, `    - name: alice-pushes
      subjects: [user:alice]
      repositories: ["**"]
      actions: [pull, push]
`)
	reg := startRegistry(t, startOptions{config: "version: 1\nhttp:\n  metricsAddr: " + maddr + "\n" + auth})
	code, body := scrape(t, "http://"+maddr, "")
	if code != http.StatusOK || !strings.Contains(body, "portcullis_build_info") {
		t.Errorf("metricsAddr: status %d: %.300s", code, body)
	}
	if strings.Contains(body, "registry_proxy_") {
		t.Error("distribution's proxy metrics are exported with no proxy configured")
	}
	if code, _ := scrape(t, reg.URL(), basic("alice", "alice-pw")); code != http.StatusNotFound {
		t.Errorf("/metrics on the registry port with metricsAddr set: %d, want 404", code)
	}
}
