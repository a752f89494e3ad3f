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
