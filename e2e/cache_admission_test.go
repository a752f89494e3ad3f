package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCacheAdmission: what the cache brings in is admitted like a push. An
// enforce policy on hub/** serves only images signed by a trusted key,
// whether the signature is a cosign bundle found through the referrers API
// or a cosign signature tag; the signatures and other referrers come with
// the manifest, so cosign verifies the cached path; cached images are
// scanned. Nobody may push into a cache, so nobody is exempt from enforce:
// not a reader (auth on) and not an anonymous caller (auth off).
func TestCacheAdmission(t *testing.T) {
	t.Parallel()
	crane, oras := tool(t, "crane"), tool(t, "oras")
	key, pub := cosignKeys(t)
	otherKey, _ := cosignKeys(t)
	up := startRegistry(t, startOptions{config: "version: 1\n"})
	seed := func(name string) string {
		return seedImage(t, nil, up.Addr+"/library/"+name+":v1", runnableImage(t, name))
	}
	signed := map[string]string{"bundle": seed("bundle"), "legacy": seed("legacy")}
	refused := map[string]string{"unsigned": seed("unsigned"), "untrusted": seed("untrusted")}
	cosignSign(t, nil, key, up.Addr+"/library/bundle@"+signed["bundle"])
	cosignSign(t, nil, key, up.Addr+"/library/legacy@"+signed["legacy"], "--new-bundle-format=false")
	cosignSign(t, nil, otherKey, up.Addr+"/library/untrusted@"+refused["untrusted"])
	work := t.TempDir()
	writeFile(t, filepath.Join(work, "sbom.json"), `{"spdxVersion":"SPDX-2.3"}`)
	runIn(t, work, oras, "attach", "--plain-http", "--artifact-type", "application/spdx+json", up.Addr+"/library/bundle@"+signed["bundle"], "sbom.json")
	out := strings.TrimSpace(run(t, nil, crane, "append", "--insecure", "-f", debianLayer(t), "-t", up.Addr+"/library/deb:v1"))
	deb := out[strings.LastIndex(out, "@")+1:]
	cosignSign(t, nil, key, up.Addr+"/library/deb@"+deb)

	trust := fmt.Sprintf(`trust:
  keys:
    - name: ci
      file: %s
  policies:
    - name: cached
      repositories: ["hub/**"]
      mode: enforce
      signers: [ci]
`, pub)

	// pullable checks what a client with env (and header, for raw
	// requests to repo) gets from an enforcing cache.
	pullable := func(t *testing.T, reg *Registry, env []string, header func(repo string) []string) {
		h := reg.Addr
		for name, want := range signed {
			ref := h + "/hub/library/" + name + ":v1"
			if out, err := runErr(env, crane, "pull", "--insecure", ref, filepath.Join(t.TempDir(), "img.tar")); err != nil {
				t.Errorf("pull of the image signed with a %s through the cache: %v\n%s", name, err, out)
				continue
			}
			if got := strings.TrimSpace(run(t, env, crane, "digest", "--insecure", ref)); got != want {
				t.Errorf("%s: digest %s, want %s", name, got, want)
			}
			if out, err := cosignVerify(t, env, pub, h+"/hub/library/"+name+"@"+want); err != nil {
				t.Errorf("cosign verify of the cached %s image: %v\n%s", name, err, out)
			}
			repo := "hub/library/" + name
			if v := getVerdict(t, reg.URL(), repo, want, "", header(repo)...); !v.Trusted || v.Mode != "enforce" {
				t.Errorf("verdict of the cached %s image: %+v", name, v)
			}
		}
		for name, d := range refused {
			for _, ref := range []string{h + "/hub/library/" + name + ":v1", h + "/hub/library/" + name + "@" + d} {
				if out, err := runErr(env, crane, "manifest", "--insecure", ref); err == nil || !strings.Contains(out, "DENIED") {
					t.Errorf("pull of %s (%s) through an enforcing cache: %v\n%.300s\nwant DENIED", ref, name, err, out)
				}
			}
		}
	}

	t.Run("reader", func(t *testing.T) {
		t.Parallel()
		auth := usersAliceAndBob(t, `    - name: bob-pulls-the-cache
      subjects: [user:bob]
      repositories: ["hub/**"]
      actions: [pull]
`)
		reg := startCache(t, cacheConfig{url: up.URL(), extra: auth + trust})
		env := []string{"DOCKER_CONFIG=" + t.TempDir()}
		run(t, env, crane, "auth", "login", "--insecure", reg.Addr, "-u", "bob", "-p", "bob-pw")
		pullable(t, reg, env, func(repo string) []string {
			return []string{"Authorization", "Bearer " + bearer(t, reg.URL(), "bob", "bob-pw", "repository:"+repo+":pull")}
		})
	})

	t.Run("anonymous", func(t *testing.T) {
		t.Parallel()
		reg := startCache(t, cacheConfig{url: up.URL(), extra: trust})
		run(t, nil, registryBin, "vulndb", "import", sharedVulnDB, "--data", reg.DataDir)
		pullable(t, reg, nil, func(string) []string { return nil })

		// The referrers came with the manifest: the cosign bundle and the SBOM.
		types := referrerTypes(t, reg.URL(), "hub/library/bundle", signed["bundle"])
		joined := strings.Join(types, ",")
		if !strings.Contains(joined, "application/spdx+json") || !strings.Contains(joined, "sigstore") {
			t.Errorf("referrers of the cached bundle image: %v, want the SBOM and the cosign bundle", types)
		}
		if got := metricSum(t, reg, "portcullis_cache_requests_total", `cache="hub"`, `kind="referrers"`); got < 1 {
			t.Errorf(`portcullis_cache_requests_total{cache="hub",kind="referrers"} sums to %v`, got)
		}
		sigTag := "sha256-" + strings.TrimPrefix(signed["legacy"], "sha256:") + ".sig"
		if out, err := runErr(nil, crane, "manifest", "--insecure", reg.Addr+"/hub/library/legacy:"+sigTag); err != nil {
			t.Errorf("the cosign signature tag %s in the cache: %v\n%s", sigTag, err, out)
		}

		// A cached image is scanned as a pushed one is.
		dbLoaded(t, reg)
		if out, err := runErr(nil, crane, "manifest", "--insecure", reg.Addr+"/hub/library/deb:v1"); err != nil {
			t.Fatalf("pull of the signed Debian image: %v\n%s", err, out)
		}
		_, report := waitReport(t, reg, "hub/library/deb", deb, 60*time.Second)
		if report.Packages == 0 || len(report.Findings) == 0 {
			t.Errorf("scan report of the cached Debian image: %d packages, %d findings", report.Packages, len(report.Findings))
		}
	})
}

// referrerTypes lists the artifact types of d's referrers in repo at base.
func referrerTypes(t *testing.T, base, repo, d string) []string {
	t.Helper()
	resp, err := http.Get(base + "/v2/" + repo + "/referrers/" + d)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("referrers of %s@%s: %d %s", repo, d, resp.StatusCode, trim(body))
	}
	var idx struct {
		Manifests []struct {
			ArtifactType string `json:"artifactType"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(body, &idx); err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, m := range idx.Manifests {
		types = append(types, m.ArtifactType)
	}
	return types
}
