package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
)

// replSites is two registries: A pushes to B (through a proxy, so that B
// can be stopped and started again on another address) and pulls from B.
type replSites struct {
	a, b    *Registry
	proxy   *faultProxy
	bConfig string
	bEnv    []string // DOCKER_CONFIG logged in to B (through the proxy) as bob, who may pull
	crane   string
}

// replStatus is GET /api/v1/replication.
type replStatus struct {
	Rules []struct {
		Name    string `json:"name"`
		Pending int    `json:"pending"`
		// RemoteAvailable is false while the remote's breaker is open.
		RemoteAvailable bool `json:"remoteAvailable"`
		LastRun         *struct {
			Started time.Time `json:"started"`
			Checked int       `json:"checked"`
			Copied  int       `json:"copied"`
			Deleted int       `json:"deleted"`
			Failed  int       `json:"failed"`
			Error   string    `json:"error"`
		} `json:"lastRun"`
		Failures []struct {
			Repository string `json:"repository"`
			Tag        string `json:"tag"`
			Digest     string `json:"digest"`
			Error      string `json:"error"`
			Permanent  bool   `json:"permanent"`
		} `json:"failures"`
	} `json:"rules"`
}

// replStart starts B (auth: alice is site A's replication account; bob
// pulls; trust policy enforce on guarded/**) and A, with a push rule to B
// and a pull rule from B on a short schedule.
func replStart(t *testing.T, s *signers) *replSites {
	t.Helper()
	st := &replSites{crane: tool(t, "crane")}
	// B is reached through the proxy only, its token service too.
	st.proxy = startFaultProxy(t, "http://127.0.0.1:1")
	users := usersAliceAndBob(t, `    - name: site-a-replicates
      subjects: [user:alice]
      repositories: ["prod/**", "guarded/**", "pulled/**"]
      actions: [pull, push, delete]
    - name: bob-pulls
      subjects: [user:bob]
      repositories: ["**"]
      actions: [pull]
`)
	users = strings.Replace(users, "  token:\n", "  token:\n    realm: "+st.proxy.URL()+"/token\n", 1)
	st.bConfig = "version: 1\n" + users + s.trustConfig("enforce")
	st.b = startRegistry(t, startOptions{config: st.bConfig})
	st.proxy.setUpstream(t, st.b.URL())

	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "user"), "alice")
	writeFile(t, filepath.Join(dir, "password"), "alice-pw")
	st.a = startRegistry(t, startOptions{config: fmt.Sprintf(`version: 1
remotes:
  - name: site-b
    url: %s
    usernameFile: %s/user
    passwordFile: %s/password
    failureThreshold: 3
    openFor: 1s
replication:
  reconcileEvery: 3s
  rules:
    - name: to-b
      mode: push
      remote: site-b
      repositories: ["prod/**", "guarded/**"]
    - name: from-b
      mode: pull
      remote: site-b
      repositories: [pulled/app]
      trigger: schedule
      interval: 2s
`, st.proxy.URL(), dir, dir)})

	st.bEnv = []string{"DOCKER_CONFIG=" + t.TempDir()}
	run(t, st.bEnv, st.crane, "auth", "login", "--insecure", st.proxy.Addr, "-u", "bob", "-p", "bob-pw")
	return st
}

// replDigest returns the digest of ref at a registry, "" when it has none.
func (st *replSites) replDigest(env []string, ref string) string {
	out, err := runErr(env, st.crane, "digest", "--insecure", ref)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// replWait waits until cond holds, failing the test with what last
// stood in the way after two minutes.
func replWait(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 2 minutes: %s", what, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// replReferrers lists the digests of the referrers of repo@d, sorted.
func replReferrers(t *testing.T, oras string, env []string, host, repo, d string) []string {
	t.Helper()
	out, err := runErr(env, oras, "discover", "--plain-http", "--format", "json", host+"/"+repo+"@"+d)
	if err != nil {
		return nil
	}
	var v struct {
		Referrers []struct {
			Digest string `json:"digest"`
		} `json:"referrers"`
		Manifests []struct {
			Digest string `json:"digest"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("oras discover: %v\n%s", err, out)
	}
	var ds []string
	for _, r := range v.Referrers {
		ds = append(ds, r.Digest)
	}
	for _, r := range v.Manifests {
		ds = append(ds, r.Digest)
	}
	slices.Sort(ds)
	return ds
}

// replStatusOf reads the replication status of the registry at base.
func replStatusOf(t *testing.T, base string) replStatus {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/replication")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s replStatus
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&s) != nil {
		t.Fatalf("replication status: %d", resp.StatusCode)
	}
	return s
}

// TestReplicationPush: an image pushed at A, then signed with cosign and
// given an SBOM with oras, arrives at B with the same digest and referrers,
// and cosign verifies it there; B's trust policy refuses an unsigned image,
// A's status names B's reason, and once signed at A the image lands; what
// is pushed while B is down arrives when B is back; a pull rule fetches
// from B on its schedule.
func TestReplicationPush(t *testing.T) {
	t.Parallel()
	oras := tool(t, "oras")
	s := newSigners(t)
	st := replStart(t, s)
	a, bHost := st.a.Addr, st.proxy.Addr

	// The graph: image, cosign signature, SBOM; the tag last at B.
	_, tarPath := imageTarball(t)
	run(t, nil, st.crane, "push", "--insecure", tarPath, a+"/prod/app:v1")
	d := st.replDigest(nil, a+"/prod/app:v1")
	if out, err := s.cosignSign(t, s.cosignKey, a+"/prod/app@"+d); err != nil {
		t.Fatalf("cosign sign: %v\n%s", err, out)
	}
	if out, err := runErr(s.notationEnv, s.notation, "sign", "--insecure-registry", a+"/prod/app@"+d); err != nil {
		t.Fatalf("notation sign: %v\n%s", err, out)
	}
	work := t.TempDir()
	writeFile(t, filepath.Join(work, "sbom.json"), `{"spdxVersion":"SPDX-2.3"}`)
	runIn(t, work, oras, "attach", "--plain-http", "--artifact-type", "application/spdx+json", a+"/prod/app@"+d, "sbom.json")
	want := replReferrers(t, oras, nil, a, "prod/app", d)
	if len(want) != 3 {
		t.Fatalf("referrers at A: %v, want the two signatures and the SBOM", want)
	}
	replWait(t, "prod/app:v1 with its referrers at B", func() (bool, string) {
		got := st.replDigest(st.bEnv, bHost+"/prod/app:v1")
		refs := replReferrers(t, oras, st.bEnv, bHost, "prod/app", d)
		return got == d && slices.Equal(refs, want), fmt.Sprintf("tag %q (want %s), referrers %v (want %v)", got, d, refs, want)
	})
	out, err := runErr(st.bEnv, s.cosign, "verify", "--key", s.cosignPub, "--insecure-ignore-tlog=true",
		"--allow-http-registry", bHost+"/prod/app:v1")
	if err != nil {
		t.Errorf("cosign verify at B: %v\n%s", err, out)
	}
	replNotationPolicy(t, s)
	bobNotation := append([]string{"NOTATION_USERNAME=bob", "NOTATION_PASSWORD=bob-pw"}, s.notationEnv...)
	if out, err := runErr(bobNotation, s.notation, "verify", "--insecure-registry", bHost+"/prod/app@"+d); err != nil {
		t.Errorf("notation verify at B: %v\n%s", err, out)
	}

	// The same image in another repository: its blobs are mounted at B
	// from the repository they went to, not uploaded again.
	run(t, nil, st.crane, "copy", "--insecure", a+"/prod/app:v1", a+"/prod/app-copy:v1")
	replWait(t, "prod/app-copy:v1 at B", func() (bool, string) {
		got := st.replDigest(st.bEnv, bHost+"/prod/app-copy:v1")
		return got == d, fmt.Sprintf("B has %q, want %s", got, d)
	})
	if n := st.proxy.count(http.MethodPut, "/v2/prod/app-copy/blobs/uploads/") + st.proxy.count(http.MethodPatch, "/v2/prod/app-copy/blobs/uploads/"); n != 0 {
		t.Errorf("blobs of prod/app-copy uploaded again (%d requests), want mounted", n)
	}
	if n := st.proxy.count(http.MethodPost, "/v2/prod/app-copy/blobs/uploads/"); n == 0 {
		t.Error("no mount request for prod/app-copy's blobs")
	}

	// A layer over 32 MiB goes in chunks, streamed.
	big, err := random.Image(40<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	bigTar := filepath.Join(t.TempDir(), "big.tar")
	writeTarball(t, bigTar, big)
	patches := st.proxy.count(http.MethodPatch, "/v2/prod/big/blobs/uploads/")
	run(t, nil, st.crane, "push", "--insecure", bigTar, a+"/prod/big:v1")
	replWait(t, "prod/big:v1 at B", func() (bool, string) {
		got := st.replDigest(st.bEnv, bHost+"/prod/big:v1")
		return got == imageDigest(t, big), fmt.Sprintf("B has %q", got)
	})
	if n := st.proxy.count(http.MethodPatch, "/v2/prod/big/blobs/uploads/") - patches; n < 2 {
		t.Errorf("the 40 MiB layer went in %d PATCH requests, want at least 2 chunks", n)
	}

	// B enforces signatures: unsigned, the tag is refused and A says why.
	_, tarPath = imageTarball(t)
	run(t, nil, st.crane, "push", "--insecure", tarPath, a+"/guarded/app:v1")
	g := st.replDigest(nil, a+"/guarded/app:v1")
	replWait(t, "A's status names B's refusal", func() (bool, string) {
		for _, r := range replStatusOf(t, st.a.URL()).Rules {
			for _, f := range r.Failures {
				if r.Name == "to-b" && f.Repository == "guarded/app" && f.Tag == "v1" && f.Permanent &&
					f.Digest == g && strings.Contains(f.Error, "DENIED") {
					return true, ""
				}
			}
		}
		return false, fmt.Sprintf("%+v", replStatusOf(t, st.a.URL()))
	})
	if got := st.replDigest(st.bEnv, bHost+"/guarded/app:v1"); got != "" {
		t.Fatalf("B tagged the unsigned guarded/app:v1 (%s)", got)
	}
	if out := run(t, nil, registryBin, "replicate", "status", "--url", st.a.URL()); !strings.Contains(out, "refused guarded/app:v1 ("+g) ||
		!strings.Contains(out, "DENIED") {
		t.Errorf("registry replicate status does not name the refusal:\n%s", out)
	}
	// Signed at A after its push: it lands at B, and the failure is gone.
	if out, err := s.cosignSign(t, s.cosignKey, a+"/guarded/app@"+g); err != nil {
		t.Fatalf("cosign sign: %v\n%s", err, out)
	}
	replWait(t, "guarded/app:v1 at B once signed", func() (bool, string) {
		got := st.replDigest(st.bEnv, bHost+"/guarded/app:v1")
		return got == g, fmt.Sprintf("B has %q, want %s; status %+v", got, g, replStatusOf(t, st.a.URL()))
	})
	for _, r := range replStatusOf(t, st.a.URL()).Rules {
		if r.Name == "to-b" && len(r.Failures) != 0 {
			t.Errorf("failures left after the signed image landed: %+v", r.Failures)
		}
	}

	// B down: five pushes at A arrive once B is back (on a new address
	// behind the same proxy).
	if err := st.b.Stop(); err != nil {
		t.Fatalf("stop B: %v", err)
	}
	pushed := map[string]string{}
	for i := range 5 {
		_, tarPath := imageTarball(t)
		repo := fmt.Sprintf("prod/batch-%d", i)
		run(t, nil, st.crane, "push", "--insecure", tarPath, a+"/"+repo+":v1")
		pushed[repo] = st.replDigest(nil, a+"/"+repo+":v1")
	}
	st.b = startRegistry(t, startOptions{config: st.bConfig, dataDir: st.b.DataDir})
	st.proxy.setUpstream(t, st.b.URL())
	replWait(t, "the images pushed while B was down", func() (bool, string) {
		var missing []string
		for repo, d := range pushed {
			if got := st.replDigest(st.bEnv, bHost+"/"+repo+":v1"); got != d {
				missing = append(missing, repo)
			}
		}
		return len(missing) == 0, fmt.Sprintf("missing at B: %v", missing)
	})

	// Pull: pushed at B by alice, fetched by A's schedule.
	aliceEnv := []string{"DOCKER_CONFIG=" + t.TempDir()}
	run(t, aliceEnv, st.crane, "auth", "login", "--insecure", bHost, "-u", "alice", "-p", "alice-pw")
	_, tarPath = imageTarball(t)
	run(t, aliceEnv, st.crane, "push", "--insecure", tarPath, bHost+"/pulled/app:v1")
	p := st.replDigest(aliceEnv, bHost+"/pulled/app:v1")
	replWait(t, "pulled/app:v1 at A", func() (bool, string) {
		got := st.replDigest(nil, a+"/pulled/app:v1")
		return got == p, fmt.Sprintf("A has %q, want %s", got, p)
	})

	if out := run(t, nil, registryBin, "replicate", "run", "to-b", "--url", st.a.URL()); !strings.Contains(out, "run started") {
		t.Errorf("registry replicate run: %s", out)
	}
	if out, err := runErr(nil, registryBin, "replicate", "run", "nope", "--url", st.a.URL()); err == nil || !strings.Contains(out, "no replication rule") {
		t.Errorf("registry replicate run of an unknown rule: %v\n%s", err, out)
	}

	resp, err := http.Get(st.a.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, w := range []string{
		`portcullis_replication_bytes_total{rule="to-b"}`,
		`portcullis_replication_failures_total{reason="denied",rule="to-b"}`,
		`portcullis_replication_lag_seconds_count{rule="to-b"}`,
		`portcullis_replication_pending{rule="to-b"}`,
	} {
		if !strings.Contains(string(metrics), w) {
			t.Errorf("A's /metrics lacks %s", w)
		}
	}
}

// replBothWaysConfig is one site of a pair that replicates prod/** both
// ways: its people push as alice or bob; the other site pushes here as
// peer (listed in replication.accounts, so not sent back); it pushes there
// as peerLogin with peerPassword.
func replBothWaysConfig(t *testing.T, self, other *faultProxy, peer, peerLogin, peerPassword string) string {
	t.Helper()
	users := usersAliceAndBob(t, `    - name: everyone-pushes-prod
      subjects: [user:alice, user:bob]
      repositories: ["prod/**"]
      actions: [pull, push]
`)
	users = strings.Replace(users, "  token:\n", "  token:\n    realm: "+self.URL()+"/token\n", 1)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "user"), peerLogin)
	writeFile(t, filepath.Join(dir, "password"), peerPassword)
	return fmt.Sprintf(`version: 1
%s
remotes:
  - name: other
    url: %s
    usernameFile: %s/user
    passwordFile: %s/password
replication:
  reconcileEvery: 1s
  accounts: [%s]
  rules:
    - name: prod-out
      mode: push
      remote: other
      repositories: ["prod/**"]
`, users, other.URL(), dir, dir, peer)
}

// TestReplicationBothWays: rules A→B and B→A over the same repositories
// (auth on both sites) deliver each site's pushes to the other, and once
// converged the reconciles write nothing more.
func TestReplicationBothWays(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	pa, pb := startFaultProxy(t, "http://127.0.0.1:1"), startFaultProxy(t, "http://127.0.0.1:1")
	// A pushes to B as alice; B pushes to A as bob.
	a := startRegistry(t, startOptions{config: replBothWaysConfig(t, pa, pb, "bob", "alice", "alice-pw")})
	b := startRegistry(t, startOptions{config: replBothWaysConfig(t, pb, pa, "alice", "bob", "bob-pw")})
	pa.setUpstream(t, a.URL())
	pb.setUpstream(t, b.URL())
	aEnv, bEnv := []string{"DOCKER_CONFIG=" + t.TempDir()}, []string{"DOCKER_CONFIG=" + t.TempDir()}
	run(t, aEnv, crane, "auth", "login", "--insecure", pa.Addr, "-u", "alice", "-p", "alice-pw")
	run(t, bEnv, crane, "auth", "login", "--insecure", pb.Addr, "-u", "bob", "-p", "bob-pw")
	st := &replSites{crane: crane}

	_, tarPath := imageTarball(t)
	run(t, aEnv, crane, "push", "--insecure", tarPath, pa.Addr+"/prod/from-a:v1")
	_, tarPath = imageTarball(t)
	run(t, bEnv, crane, "push", "--insecure", tarPath, pb.Addr+"/prod/from-b:v1")
	da, db := st.replDigest(aEnv, pa.Addr+"/prod/from-a:v1"), st.replDigest(bEnv, pb.Addr+"/prod/from-b:v1")
	replWait(t, "each site's push at the other", func() (bool, string) {
		atB, atA := st.replDigest(bEnv, pb.Addr+"/prod/from-a:v1"), st.replDigest(aEnv, pa.Addr+"/prod/from-b:v1")
		return atB == da && atA == db, fmt.Sprintf("from-a at B %q (want %s), from-b at A %q (want %s)", atB, da, atA, db)
	})

	// Converged: several reconciles on each side (each HEADs the other's
	// tags) store nothing.
	sa, sb := pa.snapshot(), pb.snapshot()
	heads := func(p *faultProxy) int { return p.count(http.MethodHead, "/manifests/v1") }
	ha, hb := heads(pa), heads(pb)
	replWait(t, "three reconciles on each side", func() (bool, string) {
		return heads(pa) >= ha+6 && heads(pb) >= hb+6, fmt.Sprintf("manifest HEADs at A %d, at B %d", heads(pa)-ha, heads(pb)-hb)
	})
	for name, p := range map[string]*faultProxy{"A": pa, "B": pb} {
		s := sa
		if name == "B" {
			s = sb
		}
		since := p.requestsSince(s)
		for _, line := range strings.Split(since, "\n") {
			if strings.HasPrefix(line, "PUT ") || strings.HasPrefix(line, "POST ") || strings.HasPrefix(line, "PATCH ") {
				t.Errorf("%s received writes after converging:\n%s", name, since)
				break
			}
		}
	}
}

// replPushConfig is site A's configuration with one push rule, to-b, of
// repos (a YAML list) to the remote site-b at url, reconciling every
// reconcileEvery ("0s": never).
func replPushConfig(url, reconcileEvery, repos string) string {
	return fmt.Sprintf(`version: 1
remotes:
  - name: site-b
    url: %s
replication:
  reconcileEvery: %s
  rules:
    - name: to-b
      mode: push
      remote: site-b
      repositories: %s
`, url, reconcileEvery, repos)
}

// replKill kills a registry process the hard way (no shutdown).
func replKill(t *testing.T, r *Registry) {
	t.Helper()
	r.stopped = true
	if err := r.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-r.done
}

// TestReplicationCrash: A is killed while its copy to B hangs; restarted
// on the same data, it copies from its outbox (no reconcile runs), and
// what was pushed while the link hung arrives once.
func TestReplicationCrash(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	b := startRegistry(t, startOptions{})
	proxy := startFaultProxy(t, b.URL())
	cfg := replPushConfig(proxy.URL(), "0s", `["prod/**"]`)
	a := startRegistry(t, startOptions{config: cfg})
	st := &replSites{crane: crane}

	proxy.setMode(hangAfterAccept)
	big, err := random.Image(8<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(t.TempDir(), "img.tar")
	writeTarball(t, tarPath, big)
	run(t, nil, crane, "push", "--insecure", tarPath, a.Addr+"/prod/app:v1")
	d := imageDigest(t, big)
	replWait(t, "A's copy under way", func() (bool, string) {
		return proxy.acceptedConns() > 0, "A has not connected to B's proxy"
	})
	replKill(t, a)
	proxy.setMode(passThrough)
	if got := st.replDigest(nil, proxy.Addr+"/prod/app:v1"); got != "" {
		t.Fatalf("B has prod/app:v1 (%s) before A restarted", got)
	}
	a = startRegistry(t, startOptions{config: cfg, dataDir: a.DataDir})
	replWait(t, "prod/app:v1 at B after A's restart", func() (bool, string) {
		got := st.replDigest(nil, proxy.Addr+"/prod/app:v1")
		return got == d, fmt.Sprintf("B has %q, want %s", got, d)
	})
	if n := proxy.count(http.MethodPut, "/v2/prod/app/manifests/v1"); n != 1 {
		t.Errorf("tag PUTs at B: %d, want 1", n)
	}
}

// replNotationPolicy trusts the signers' Notation test certificate for
// every registry, so that notation verify can run.
func replNotationPolicy(t *testing.T, s *signers) {
	t.Helper()
	var dir string
	for _, e := range s.notationEnv {
		if v, ok := strings.CutPrefix(e, "XDG_CONFIG_HOME="); ok {
			dir = filepath.Join(v, "notation")
		}
	}
	policy := `{"version":"1.0","trustPolicies":[{"name":"e2e","registryScopes":["*"],
"signatureVerification":{"level":"strict"},"trustStores":["ca:portcullis-e2e"],"trustedIdentities":["*"]}]}`
	// notation 1.2 and later read trustpolicy.oci.json, earlier ones
	// trustpolicy.json.
	writeFile(t, filepath.Join(dir, "trustpolicy.oci.json"), policy)
	writeFile(t, filepath.Join(dir, "trustpolicy.json"), policy)
}
