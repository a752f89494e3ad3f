package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// replContainer runs the registry image as name on network with the
// configuration file cfg (in dir, mounted read-only).
func replContainer(t *testing.T, docker, image, network, name, dir, cfg string) {
	t.Helper()
	run(t, nil, docker, "run", "-d", "--name", name, "--network", network, "-v", dir+":"+dir+":ro",
		image, "serve", "--config", filepath.Join(dir, cfg), "--addr", ":5000", "--data", "/data")
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := exec.Command(docker, "logs", "--tail", "30", name).CombinedOutput()
			t.Logf("%s, last log lines:\n%s", name, logs)
		}
		_, _ = runErr(nil, docker, "rm", "-f", "-v", name)
	})
}

// replAddr returns a container's host:port on network, once it answers.
func replAddr(t *testing.T, docker, network, name string) string {
	t.Helper()
	var addr string
	replWait(t, name+" ready", func() (bool, string) {
		ip := strings.TrimSpace(run(t, nil, docker, "inspect", "--format",
			fmt.Sprintf("{{with index .NetworkSettings.Networks %q}}{{.IPAddress}}{{end}}", network), name))
		if net.ParseIP(ip) == nil {
			return false, fmt.Sprintf("no address on %s: %q", network, ip)
		}
		addr = net.JoinHostPort(ip, "5000")
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	return addr
}

// TestReplicationPartition: sites A and B are containers on a private
// Docker network; B is disconnected from it while 20 images are pushed at
// A, and all 20 arrive once it is connected again.
func TestReplicationPartition(t *testing.T) {
	t.Parallel()
	docker, crane := tool(t, "docker"), tool(t, "crane")
	if out, err := runErr(nil, docker, "info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Fatalf("docker engine not answering: %v\n%s", err, out)
	}
	suffix := fmt.Sprintf("%d", time.Now().UnixNano())
	image := haBuildImage(t, docker, "portcullis:e2e-repl-"+suffix)
	network := "portcullis-repl-" + suffix
	run(t, nil, docker, "network", "create", network)
	t.Cleanup(func() { _, _ = runErr(nil, docker, "network", "rm", network) })

	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bName, aName := "portcullis-repl-b-"+suffix, "portcullis-repl-a-"+suffix
	writeFile(t, filepath.Join(dir, "b.yml"), "version: 1\n")
	writeFile(t, filepath.Join(dir, "a.yml"), fmt.Sprintf(`version: 1
remotes:
  - name: site-b
    url: http://%s:5000
    dialTimeout: 2s
    timeout: 5s
    openFor: 2s
replication:
  reconcileEvery: 5s
  rules:
    - name: to-b
      mode: push
      remote: site-b
      repositories: ["prod/**"]
`, bName))
	replContainer(t, docker, image, network, bName, dir, "b.yml")
	replContainer(t, docker, image, network, aName, dir, "a.yml")
	a, b := replAddr(t, docker, network, aName), replAddr(t, docker, network, bName)
	st := &replSites{crane: crane}

	_, tarPath := imageTarball(t)
	run(t, nil, crane, "push", "--insecure", tarPath, a+"/prod/first:v1")
	first := st.replDigest(nil, a+"/prod/first:v1")
	replWait(t, "prod/first:v1 at B", func() (bool, string) {
		got := st.replDigest(nil, b+"/prod/first:v1")
		return got == first, fmt.Sprintf("B has %q, want %s", got, first)
	})

	run(t, nil, docker, "network", "disconnect", network, bName)
	pushed := map[string]string{}
	for i := range 20 {
		_, tarPath := imageTarball(t)
		repo := fmt.Sprintf("prod/cut-%02d", i)
		run(t, nil, crane, "push", "--insecure", tarPath, a+"/"+repo+":v1")
		pushed[repo] = st.replDigest(nil, a+"/"+repo+":v1")
	}
	replWait(t, "A reports the events it cannot deliver", func() (bool, string) {
		s := replStatusOf(t, "http://"+a)
		return s.Rules[0].Pending > 0 && len(s.Rules[0].Failures) > 0, fmt.Sprintf("%+v", s)
	})
	run(t, nil, docker, "network", "connect", network, bName)
	b = replAddr(t, docker, network, bName)
	replWait(t, "the 20 images pushed during the partition at B", func() (bool, string) {
		var missing []string
		for repo, d := range pushed {
			if got := st.replDigest(nil, b+"/"+repo+":v1"); got != d {
				missing = append(missing, repo)
			}
		}
		return len(missing) == 0, fmt.Sprintf("missing at B: %v", missing)
	})
	replWait(t, "A's status clear", func() (bool, string) {
		s := replStatusOf(t, "http://"+a)
		return s.Rules[0].Pending == 0 && len(s.Rules[0].Failures) == 0, fmt.Sprintf("%+v", s)
	})
}
