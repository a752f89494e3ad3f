package e2e

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// replTagDir returns the directory of repo:tag in a filesystem data
// directory.
func replTagDir(t *testing.T, dataDir, repo, tag string) string {
	t.Helper()
	want := filepath.Join("repositories", repo, "_manifests", "tags", tag)
	var found string
	_ = filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && strings.HasSuffix(path, want) {
			found = path
			return filepath.SkipAll
		}
		return nil
	})
	if found == "" {
		t.Fatalf("no directory for %s:%s under %s", repo, tag, dataDir)
	}
	return found
}

// replPending returns rule's pending event count at base.
func replPending(t *testing.T, base, rule string) int {
	t.Helper()
	for _, r := range replStatusOf(t, base).Rules {
		if r.Name == rule {
			return r.Pending
		}
	}
	t.Fatalf("no rule %s in the status", rule)
	return 0
}

// TestReplicationDeletes: a rule with deletes on removes at B a tag deleted
// at A, by its event and, when the event was missed (the tag removed from
// A's storage while A was down), by its reconcile; a rule with deletes off
// leaves both at B.
func TestReplicationDeletes(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	b := startRegistry(t, startOptions{})
	cfg := fmt.Sprintf(`version: 1
remotes:
  - name: site-b
    url: %s
replication:
  reconcileEvery: 2s
  rules:
    - name: del-b
      mode: push
      remote: site-b
      repositories: ["del/**"]
      deletes: true
    - name: keep-b
      mode: push
      remote: site-b
      repositories: ["keep/**"]
      deletes: false
`, b.URL())
	a := startRegistry(t, startOptions{config: cfg})
	st := &replSites{crane: crane}
	want := map[string]string{}
	for _, repo := range []string{"del/app", "keep/app"} {
		for _, tag := range []string{"v1", "v2", "v3"} {
			_, tarPath := imageTarball(t)
			ref := repo + ":" + tag
			run(t, nil, crane, "push", "--insecure", tarPath, a.Addr+"/"+ref)
			want[ref] = st.replDigest(nil, a.Addr+"/"+ref)
		}
	}
	atB := func(ref string) string { return st.replDigest(nil, b.Addr+"/"+ref) }
	replWait(t, "the six tags at B", func() (bool, string) {
		var missing []string
		for ref, d := range want {
			if atB(ref) != d {
				missing = append(missing, ref)
			}
		}
		slices.Sort(missing)
		return len(missing) == 0, fmt.Sprintf("missing %v", missing)
	})

	// By event: v1 deleted at A.
	for _, repo := range []string{"del/app", "keep/app"} {
		run(t, nil, crane, "delete", "--insecure", a.Addr+"/"+repo+":v1")
	}
	replWait(t, "del/app:v1 deleted at B", func() (bool, string) {
		return atB("del/app:v1") == "", fmt.Sprintf("B still has it; A's status %+v", replStatusOf(t, a.URL()))
	})
	replWait(t, "keep-b's events done", func() (bool, string) {
		n := replPending(t, a.URL(), "keep-b")
		return n == 0, fmt.Sprintf("%d pending", n)
	})
	replRuleRanSince(t, a.URL(), "keep-b", time.Now())

	// Missed: v2 removed from A's storage while A is down; A comes back
	// with no event for it, and its reconcile deletes it at B.
	if err := a.Stop(); err != nil {
		t.Fatalf("stop A: %v", err)
	}
	for _, repo := range []string{"del/app", "keep/app"} {
		if err := os.RemoveAll(replTagDir(t, a.DataDir, repo, "v2")); err != nil {
			t.Fatal(err)
		}
	}
	a = startRegistry(t, startOptions{config: cfg, dataDir: a.DataDir})
	if got := st.replDigest(nil, a.Addr+"/del/app:v2"); got != "" {
		t.Fatalf("A still has del/app:v2 (%s)", got)
	}
	replWait(t, "del/app:v2 deleted at B by the reconcile", func() (bool, string) {
		return atB("del/app:v2") == "", fmt.Sprintf("B still has it; A's status %+v", replStatusOf(t, a.URL()))
	})
	replRuleRanSince(t, a.URL(), "keep-b", time.Now())
	replRuleRanSince(t, a.URL(), "keep-b", time.Now())

	for ref, d := range want {
		got := atB(ref)
		switch {
		case strings.HasPrefix(ref, "del/") && !strings.HasSuffix(ref, ":v3"):
			if got != "" {
				t.Errorf("B has %s (%s), deleted at A with deletes on", ref, got)
			}
		case got != d:
			t.Errorf("B has %s at %q, want %s (deletes off, or not deleted)", ref, got, d)
		}
	}
	for _, r := range replStatusOf(t, a.URL()).Rules {
		if len(r.Failures) != 0 {
			t.Errorf("rule %s failures: %+v", r.Name, r.Failures)
		}
	}
}

// replAttach attaches an artifact of type to ref at a registry with oras
// and returns the referrer's digest.
func replAttach(t *testing.T, oras, ref, artifactType string) string {
	t.Helper()
	work := t.TempDir()
	writeFile(t, filepath.Join(work, "doc.json"), fmt.Sprintf(`{"type":%q,"at":%q}`, artifactType, time.Now().String()))
	out := runIn(t, work, oras, "attach", "--plain-http", "--artifact-type", artifactType, "--format", "go-template={{.digest}}", ref, "doc.json")
	return strings.TrimSpace(out)
}

// TestReplicationOneWay: A only pulls from B (a one-way link) on a short
// schedule. While B is unreachable, A's status shows the failure; pushes
// at B meanwhile (a new tag, referrers of an image A has, a referrer of a
// referrer) all arrive once B is back.
func TestReplicationOneWay(t *testing.T) {
	t.Parallel()
	crane, oras := tool(t, "crane"), tool(t, "oras")
	b := startRegistry(t, startOptions{})
	link := startFaultProxy(t, b.URL())
	a := startRegistry(t, startOptions{config: fmt.Sprintf(`version: 1
remotes:
  - name: site-b
    url: %s
    dialTimeout: 1s
    timeout: 5s
    failureThreshold: 2
    openFor: 1s
replication:
  rules:
    - name: from-b
      mode: pull
      remote: site-b
      repositories: [one/app]
      trigger: schedule
      interval: 1s
`, link.URL())})
	st := &replSites{crane: crane}

	_, tarPath := imageTarball(t)
	run(t, nil, crane, "push", "--insecure", tarPath, b.Addr+"/one/app:v1")
	d1 := st.replDigest(nil, b.Addr+"/one/app:v1")
	replAttach(t, oras, b.Addr+"/one/app@"+d1, "application/spdx+json")
	replWait(t, "one/app:v1 at A", func() (bool, string) {
		got := st.replDigest(nil, a.Addr+"/one/app:v1")
		return got == d1, fmt.Sprintf("A has %q", got)
	})

	// The link is cut: B refuses every connection from A's side.
	link.setMode(refuse)
	cut := time.Now()
	_, tarPath = imageTarball(t)
	run(t, nil, crane, "push", "--insecure", tarPath, b.Addr+"/one/app:v2")
	d2 := st.replDigest(nil, b.Addr+"/one/app:v2")
	sbom := replAttach(t, oras, b.Addr+"/one/app@"+d2, "application/spdx+json")
	replAttach(t, oras, b.Addr+"/one/app@"+sbom, "application/vnd.example.signature")
	replAttach(t, oras, b.Addr+"/one/app@"+d1, "application/vnd.example.signature")
	replWait(t, "A's status shows the unreachable remote", func() (bool, string) {
		for _, r := range replStatusOf(t, a.URL()).Rules {
			if r.Name != "from-b" {
				continue
			}
			for _, f := range r.Failures {
				if f.Repository == "one/app" && f.Error != "" && !f.Permanent && r.LastRun != nil && r.LastRun.Started.After(cut) {
					return true, ""
				}
			}
			return false, fmt.Sprintf("%+v", r)
		}
		return false, "no rule from-b"
	})
	time.Sleep(3 * time.Second) // the outage goes on over several scheduled runs
	if got := st.replDigest(nil, a.Addr+"/one/app:v2"); got != "" {
		t.Fatalf("A has one/app:v2 (%s) through a cut link", got)
	}

	link.setMode(passThrough)
	replWait(t, "A caught up with B", func() (bool, string) {
		var behind []string
		for tag, d := range map[string]string{"v1": d1, "v2": d2} {
			if got := st.replDigest(nil, a.Addr+"/one/app:"+tag); got != d {
				behind = append(behind, tag+" "+got)
				continue
			}
			if wantRefs, got := replReferrers(t, oras, nil, b.Addr, "one/app", d), replReferrers(t, oras, nil, a.Addr, "one/app", d); !slices.Equal(got, wantRefs) {
				behind = append(behind, fmt.Sprintf("referrers of %s: %v, want %v", tag, got, wantRefs))
			}
		}
		if wantRefs, got := replReferrers(t, oras, nil, b.Addr, "one/app", sbom), replReferrers(t, oras, nil, a.Addr, "one/app", sbom); !slices.Equal(got, wantRefs) {
			behind = append(behind, fmt.Sprintf("referrers of the SBOM: %v, want %v", got, wantRefs))
		}
		return len(behind) == 0, strings.Join(behind, "; ")
	})
	replWait(t, "A's status clear", func() (bool, string) {
		for _, r := range replStatusOf(t, a.URL()).Rules {
			if len(r.Failures) != 0 || !r.RemoteAvailable {
				return false, fmt.Sprintf("%+v", r)
			}
		}
		return true, ""
	})
}

// TestReplicationPullPatterns: pull rules name repositories by pattern; A
// lists B's catalog (as the rule's remote account may see it) and fetches
// the repositories that match. A rule whose account B refuses the catalog
// says so in A's status.
func TestReplicationPullPatterns(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	users := usersAliceAndBob(t, `    - name: alice-team
      subjects: [user:alice]
      repositories: ["team/**", "other/**"]
      actions: [pull, push]
    - name: bob-pulls
      subjects: [user:bob]
      repositories: ["**"]
      actions: [pull]
`)
	users = strings.Replace(users, "  rules:\n", "  catalog: [user:alice]\n  rules:\n", 1)
	b := startRegistry(t, startOptions{config: "version: 1\n" + users})
	dir := t.TempDir()
	for _, u := range []string{"alice", "bob"} {
		writeFile(t, filepath.Join(dir, u+"-user"), u)
		writeFile(t, filepath.Join(dir, u+"-password"), u+"-pw")
	}
	a := startRegistry(t, startOptions{config: fmt.Sprintf(`version: 1
remotes:
  - name: b-as-alice
    url: %[1]s
    usernameFile: %[2]s/alice-user
    passwordFile: %[2]s/alice-password
  - name: b-as-bob
    url: %[1]s
    usernameFile: %[2]s/bob-user
    passwordFile: %[2]s/bob-password
replication:
  rules:
    - name: team-from-b
      mode: pull
      remote: b-as-alice
      repositories: ["team/**"]
      interval: 1s
    - name: other-from-b
      mode: pull
      remote: b-as-bob
      repositories: ["other/**", "team/named"]
      interval: 1s
`, b.URL(), dir)})
	st := &replSites{crane: crane}
	bEnv := []string{"DOCKER_CONFIG=" + t.TempDir()}
	run(t, bEnv, crane, "auth", "login", "--insecure", b.Addr, "-u", "alice", "-p", "alice-pw")
	want := map[string]string{}
	for _, repo := range []string{"team/a", "team/x/y", "team/named", "other/c"} {
		_, tarPath := imageTarball(t)
		run(t, bEnv, crane, "push", "--insecure", tarPath, b.Addr+"/"+repo+":v1")
		want[repo] = st.replDigest(bEnv, b.Addr+"/"+repo+":v1")
	}
	replWait(t, "team/** at A", func() (bool, string) {
		var missing []string
		for _, repo := range []string{"team/a", "team/x/y", "team/named"} {
			if got := st.replDigest(nil, a.Addr+"/"+repo+":v1"); got != want[repo] {
				missing = append(missing, repo)
			}
		}
		return len(missing) == 0, fmt.Sprintf("missing %v", missing)
	})
	replWait(t, "other-from-b's refused catalog in A's status", func() (bool, string) {
		for _, r := range replStatusOf(t, a.URL()).Rules {
			if r.Name != "other-from-b" {
				continue
			}
			for _, f := range r.Failures {
				if f.Repository == "other/**" && strings.HasPrefix(f.Error, "list the remote's catalog: ") {
					return true, ""
				}
			}
			return false, fmt.Sprintf("%+v", r)
		}
		return false, "no rule other-from-b"
	})
	if got := st.replDigest(nil, a.Addr+"/other/c:v1"); got != "" {
		t.Errorf("A has other/c:v1 (%s) though B refused bob its catalog", got)
	}
	out := run(t, nil, registryBin, "replicate", "status", "--url", a.URL())
	if !strings.Contains(out, "other/**") || !strings.Contains(out, "list the remote's catalog") {
		t.Errorf("registry replicate status does not name the refused catalog:\n%s", out)
	}
	t.Logf("A's status:\n%s", out)
	for _, r := range replStatusOf(t, a.URL()).Rules {
		if r.Name == "team-from-b" && len(r.Failures) != 0 {
			t.Errorf("team-from-b failures: %+v", r.Failures)
		}
	}
}
