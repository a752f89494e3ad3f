package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// replRuleRanSince waits until rule's last run at the registry at base
// started after since, so that what was there at since was compared.
func replRuleRanSince(t *testing.T, base, rule string, since time.Time) {
	t.Helper()
	replWait(t, "a run of "+rule+" after "+since.Format(time.TimeOnly), func() (bool, string) {
		for _, r := range replStatusOf(t, base).Rules {
			if r.Name == rule && r.LastRun != nil {
				return r.LastRun.Started.After(since), fmt.Sprintf("last run started %s", r.LastRun.Started)
			}
		}
		return false, "no run yet"
	})
}

// TestReplicationScan: both sites scan, each with its own database (A's
// lacks the Debian records). An image pushed at A arrives at B, which
// scans it itself: B's one report for the digest is its own, with the
// findings of its database, and A's report never reaches B (A never sends
// it, and B refuses it from a client, which replication is), while A's
// reconciles copy the image again without failing. B enforces signatures
// on guarded/**: an image signed at A a second after its push still ends
// up tagged at B.
func TestReplicationScan(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	s := newSigners(t)
	b := startRegistry(t, startOptions{config: "version: 1\n" + s.trustConfig("enforce")})
	link := startFaultProxy(t, b.URL())
	a := startRegistry(t, startOptions{config: replPushConfig(link.URL(), "2s", `["prod/**", "guarded/**"]`)})
	run(t, nil, registryBin, "vulndb", "import", bundleWithout(t, "Debian"), "--data", a.DataDir)
	if out := run(t, nil, registryBin, "vulndb", "import", sharedVulnDB, "--data", b.DataDir); !strings.Contains(out, "Debian") {
		t.Fatalf("vulndb import at B: %s", out)
	}
	dbLoaded(t, a)
	dbLoaded(t, b)

	run(t, nil, crane, "append", "--insecure", "-f", debianLayer(t), "-t", a.Addr+"/prod/deb:v1")
	d := strings.TrimSpace(run(t, nil, crane, "digest", "--insecure", a.Addr+"/prod/deb:v1"))
	_, atA := waitReport(t, a, "prod/deb", d, 60*time.Second)
	reportsA := reportDigests(t, a.URL(), "prod/deb", d)
	if len(reportsA) != 1 || len(atA.Findings) != 0 || atA.Packages == 0 {
		t.Fatalf("A's reports of %s: %v with %d packages, %d findings; want one, without Debian findings", d, reportsA, atA.Packages, len(atA.Findings))
	}
	scanned := time.Now()

	// B has the image and its own report, with its own database's findings.
	replWait(t, "prod/deb:v1 at B", func() (bool, string) {
		// Not there yet is a failed crane digest: poll again.
		out, err := runErr(nil, crane, "digest", "--insecure", b.Addr+"/prod/deb:v1")
		got := strings.TrimSpace(out)
		return err == nil && got == d, fmt.Sprintf("B has %q (%v), want %s", got, err, d)
	})
	_, atB := waitReport(t, b, "prod/deb", d, 60*time.Second)
	if len(atB.Findings) == 0 || atB.Packages != atA.Packages {
		t.Errorf("B's report: %d packages, %d findings; want A's %d packages, and findings from B's database", atB.Packages, len(atB.Findings), atA.Packages)
	}

	// Two reconciles since A's report exists: each copied prod/deb:v1
	// again with its referrers, and left A's report behind.
	replRuleRanSince(t, a.URL(), "to-b", scanned)
	replRuleRanSince(t, a.URL(), "to-b", time.Now())
	for _, r := range replStatusOf(t, a.URL()).Rules {
		if len(r.Failures) != 0 {
			t.Errorf("A's rule %s failed: %+v", r.Name, r.Failures)
		}
	}
	reportsB := reportDigests(t, b.URL(), "prod/deb", d)
	if len(reportsB) != 1 || reportsB[0] == reportsA[0] {
		t.Errorf("B's reports of %s: %v, want one of its own (A's is %s)", d, reportsB, reportsA[0])
	}
	if n := link.count("", "/manifests/"+reportsA[0]); n != 0 {
		t.Errorf("A sent requests for its report to B: %d", n)
	}
	resp, err := http.Head(b.URL() + "/v2/prod/deb/manifests/" + reportsA[0])
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD of A's report at B: %d, want 404", resp.StatusCode)
	}
	// A client (which replication is) may not store A's report at B.
	out, err := runErr(nil, crane, "copy", "--insecure", a.Addr+"/prod/deb@"+reportsA[0], b.Addr+"/prod/deb@"+reportsA[0])
	if err == nil || !strings.Contains(out, "DENIED") {
		t.Errorf("crane copy of A's report to B: %v, want DENIED\n%s", err, out)
	}

	// Enforce at B: pushed unsigned, signed a second later.
	_, tarPath := imageTarball(t)
	run(t, nil, crane, "push", "--insecure", tarPath, a.Addr+"/guarded/app:v1")
	g := strings.TrimSpace(run(t, nil, crane, "digest", "--insecure", a.Addr+"/guarded/app:v1"))
	time.Sleep(time.Second) // the delay under test: a signature a second after the push
	if out, err := s.cosignSign(t, s.cosignKey, a.Addr+"/guarded/app@"+g); err != nil {
		t.Fatalf("cosign sign: %v\n%s", err, out)
	}
	replWait(t, "guarded/app:v1 at B, signed a second after its push", func() (bool, string) {
		got, _ := runErr(nil, crane, "digest", "--insecure", b.Addr+"/guarded/app:v1")
		return strings.TrimSpace(got) == g, fmt.Sprintf("B has %q, want %s; A's status %+v", got, g, replStatusOf(t, a.URL()))
	})
	if out, err := runErr(nil, s.cosign, "verify", "--key", s.cosignPub, "--insecure-ignore-tlog=true",
		"--allow-http-registry", b.Addr+"/guarded/app:v1"); err != nil {
		t.Errorf("cosign verify at B: %v\n%s", err, out)
	}
}
