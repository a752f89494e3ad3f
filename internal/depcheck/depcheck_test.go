package depcheck

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const mod = "github.com/portcullis/portcullis/"

// A rule restricts the packages selected by pkgs (a directory relative to
// the module root; "dir/..." is dir and every package below it, "..." is
// every package) minus those selected by except.
//
// Patterns name import paths: "p" matches p only; "p/" matches p and
// every path below it; "p/*" matches the paths below p only.
type rule struct {
	pkgs   string
	except []string
	// imports lists what the packages must not import directly.
	imports []string
	// deps lists what the packages must not depend on, even indirectly.
	deps []string
	// onlyOurs, when set, lists the module packages the packages may
	// depend on (besides themselves), even indirectly.
	onlyOurs []string
	// stdOnly requires direct imports from the standard library only.
	stdOnly bool
	// maxThirdParty, when set, bounds the third-party packages depended on.
	maxThirdParty int
	// optional skips the rule when its directory does not exist yet.
	optional bool
	why      string
}

// scanner libraries we must not pull in (DESIGN.md §6).
var heavyScanners = []string{
	"github.com/anchore/syft/", "github.com/aquasecurity/trivy/", "github.com/anchore/grype/",
	"github.com/google/osv-scalibr", // the root package; its subpackages are checked in scalibrOnlySemantic
}

var rules = []rule{
	// Layering, over every package.
	{pkgs: "...", imports: []string{"expvar"},
		why: "expvar would serve distribution's configuration, secrets included"},
	{pkgs: "...", except: []string{"internal/app"}, imports: []string{"github.com/sirupsen/logrus"},
		why: "only internal/app configures distribution's logger"},
	{pkgs: "...", except: []string{"cmd/...", "internal/app", "internal/testenv"}, imports: []string{mod + "internal/app"},
		why: "only cmd/ (and the test harness) may import internal/app"},
	{pkgs: "config/...", onlyOurs: []string{mod + "config", mod + "policy"},
		why: "config holds types only, checked through the policy grammar"},
	{pkgs: "auth/...", imports: []string{mod + "internal/"}, why: "domain packages do not import the server's internals"},
	{pkgs: "storage/...", imports: []string{mod + "internal/"}, why: "domain packages do not import the server's internals"},
	{pkgs: "scan/...", imports: []string{mod + "internal/"}, why: "domain packages do not import the server's internals"},
	{pkgs: "trust/...", imports: []string{mod + "internal/"}, why: "domain packages do not import the server's internals"},
	{pkgs: "replication/...", imports: []string{mod + "internal/"}, why: "domain packages do not import the server's internals"},
	{pkgs: "replication", onlyOurs: []string{mod + "replication"}, deps: []string{"github.com/distribution/distribution/v3/registry/"},
		why: "the remote client stands alone: no registry core, no other part of Portcullis"},
	{pkgs: "internal/cache", imports: []string{mod + "internal/front", mod + "internal/api", mod + "internal/app", mod + "internal/admission"},
		why: "the cache fills storage; the front handler decides who reads, and the API how errors look"},
	{pkgs: "internal/gc", imports: []string{mod + "internal/", "net/http"},
		why: "the collector works on storage alone: the front handler and the API call it, never the reverse"},

	// auth: the policy stays pure, audit and ratelimit stay independent of
	// HTTP and of each other.
	{pkgs: "auth", imports: []string{"net/http", "os", "io", "log/slog", "time", mod + "auth/", "github.com/distribution/", mod + "internal/"},
		why: "the access policy is pure"},
	{pkgs: "auth/audit", imports: []string{"net/http", mod, "github.com/distribution/"},
		why: "audit is independent of HTTP and of the rest of Portcullis"},
	{pkgs: "auth/ratelimit", imports: []string{"net/http", "os", mod, "github.com/distribution/"},
		why: "ratelimit is independent of HTTP and of the rest of Portcullis"},
	{pkgs: "auth/token", imports: []string{mod + "internal/", "github.com/distribution/distribution/v3/registry/handlers",
		"github.com/distribution/distribution/v3/registry/storage/driver/*", "github.com/sirupsen/logrus"},
		why: "the token service does not embed the registry"},

	// storage: free of the rest of Portcullis, of the MinIO server (AGPL:
	// we run it, never link it) and of logrus.
	{pkgs: "storage", onlyOurs: []string{mod + "storage", mod + "storage/miniotest"}, deps: []string{"github.com/minio/minio/"},
		imports: []string{"github.com/sirupsen/logrus"}, why: "storage stands alone; MinIO's server is AGPL; log with log/slog"},
	{pkgs: "storage/miniotest", onlyOurs: []string{mod + "storage", mod + "storage/miniotest"}, deps: []string{"github.com/minio/minio/"},
		imports: []string{"github.com/sirupsen/logrus"}, why: "storage stands alone; MinIO's server is AGPL; log with log/slog"},

	// scan: small (DESIGN.md §6), nothing of the server, each sub-package to
	// its job. The inventory reads rpm databases itself: no SQL engine, not
	// go-rpmdb (see inventory/rpm.go for why).
	{pkgs: "scan", deps: append([]string{mod + "internal/", mod + "auth", mod + "storage", mod + "config"}, heavyScanners...),
		maxThirdParty: 60, why: "the scanner stays small and free of the server"},
	{pkgs: "scan/inventory", deps: append([]string{mod + "scan", "github.com/google/go-containerregistry/", "net/http",
		"database/sql", "modernc.org/", "github.com/erikvarga/go-rpmdb/", "github.com/knqyf263/go-rpmdb/"}, heavyScanners...),
		maxThirdParty: 60, why: "the inventory reads layers it is given, rpm databases by itself"},
	{pkgs: "scan/osv", deps: append([]string{mod + "scan/", "net/http"}, heavyScanners...),
		maxThirdParty: 60, why: "matching needs no other scan package and no network"},
	{pkgs: "scan/vulndb", deps: append([]string{mod + "scan/inventory", "net/http"}, heavyScanners...),
		maxThirdParty: 60, why: "the database is imported offline"},
	// artifact formats: blobs come in through a Fetch function.
	{pkgs: "scan/artifact", onlyOurs: []string{mod + "scan/"}, deps: []string{"github.com/distribution/",
		"github.com/google/go-containerregistry/pkg/v1/remote/", "oras.land/", "net/http"},
		why: "artifact formats are free of the server and of registry clients"},

	// trust: nothing of the server or the other domain packages, not cosign
	// itself (its command tree pulls in every KMS and cloud SDK).
	{pkgs: "trust", deps: []string{mod + "internal/", mod + "scan/", mod + "storage/", mod + "replication/",
		"github.com/distribution/distribution/", "github.com/sigstore/cosign/", "github.com/sigstore/sigstore/pkg/signature/kms/"},
		why: "trust verifies signatures and nothing else"},
	{pkgs: "trust", deps: []string{mod + "auth"}, why: "trust does not depend on access control; patterns come from policy"},

	{pkgs: "internal/admission", imports: []string{mod + "internal/"}, why: "admission decides; other internal packages serve and wire it"},

	// policy: repository patterns and policy matching, the standard library
	// only.
	{pkgs: "policy", stdOnly: true, why: "policy is pure"},
}

// undocumented lists the packages that have no doc comment yet; every
// other package must have one.
var undocumented = []string{}

// pkg is one package of the module, read from its non-test Go files.
type pkg struct {
	dir        string // relative to the module root, "/"-separated; "." for the root
	imports    []string
	documented bool
	deps       []string // from go list
}

func TestDependencies(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	pkgs := readPackages(t, root)
	addDeps(t, root, pkgs)
	if len(pkgs) < 10 {
		t.Fatalf("found %d packages under %s: the walk is broken", len(pkgs), root)
	}

	for _, r := range rules {
		if r.optional {
			if _, err := os.Stat(filepath.Join(root, strings.TrimSuffix(r.pkgs, "/..."))); err != nil {
				continue
			}
		}
		matched := 0
		for _, p := range sortedKeys(pkgs) {
			pk := pkgs[p]
			if !selects(r.pkgs, pk.dir) || slices.ContainsFunc(r.except, func(e string) bool { return selects(e, pk.dir) }) {
				continue
			}
			matched++
			self := mod + pk.dir
			for _, imp := range pk.imports {
				if matchesAny(r.imports, imp) {
					t.Errorf("%s imports %s: %s", pk.dir, imp, r.why)
				}
				if r.stdOnly && !isStd(imp) {
					t.Errorf("%s imports %s: %s (standard library only)", pk.dir, imp, r.why)
				}
			}
			thirdParty := 0
			for _, d := range pk.deps {
				if d == self {
					continue
				}
				if !isStd(d) && !strings.HasPrefix(d, mod) {
					thirdParty++
				}
				if matchesAny(r.deps, d) || scalibrBeyondSemantic(r, d) {
					t.Errorf("%s depends on %s: %s", pk.dir, d, r.why)
				}
				if r.onlyOurs != nil && strings.HasPrefix(d, mod) && !matchesAny(r.onlyOurs, d) {
					t.Errorf("%s depends on %s: %s", pk.dir, d, r.why)
				}
			}
			if r.maxThirdParty > 0 && thirdParty > r.maxThirdParty {
				t.Errorf("%s pulls in %d third-party packages (at most %d): %s", pk.dir, thirdParty, r.maxThirdParty, r.why)
			}
		}
		if matched == 0 {
			t.Errorf("rule for %s selects no package", r.pkgs)
		}
	}

	for _, p := range sortedKeys(pkgs) {
		pk := pkgs[p]
		switch known := slices.Contains(undocumented, pk.dir); {
		case !pk.documented && !known:
			t.Errorf("package %s has no doc comment", pk.dir)
		case pk.documented && known:
			t.Logf("package %s has a doc comment now: drop it from undocumented", pk.dir)
		}
	}
}

// scalibrBeyondSemantic reports a dependency on osv-scalibr other than its
// semantic package, for the scan rules.
func scalibrBeyondSemantic(r rule, d string) bool {
	return r.maxThirdParty > 0 && strings.HasPrefix(d, "github.com/google/osv-scalibr/") && d != "github.com/google/osv-scalibr/semantic"
}

// selects reports whether the package selector sel ("dir", "dir/...", "...")
// selects the package in dir.
func selects(sel, dir string) bool {
	if sel == "..." {
		return true
	}
	if base, ok := strings.CutSuffix(sel, "/..."); ok {
		return dir == base || strings.HasPrefix(dir, base+"/")
	}
	return dir == sel
}

// matchesAny reports whether path matches a pattern: "p" matches p only,
// "p/" matches p and every path below it, "p/*" the paths below p only.
func matchesAny(patterns []string, path string) bool {
	for _, p := range patterns {
		if below, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(path, below) {
				return true
			}
			continue
		}
		if path == strings.TrimSuffix(p, "/") || (strings.HasSuffix(p, "/") && strings.HasPrefix(path, p)) {
			return true
		}
	}
	return false
}

func isStd(path string) bool {
	return !strings.Contains(strings.Split(path, "/")[0], ".")
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	// go test puts its own go first on $PATH.
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatal("not in a module")
	}
	return filepath.Dir(gomod)
}

// readPackages parses the imports and doc comments of every package in the
// module (non-test files), skipping testdata, hidden directories and nested
// modules.
func readPackages(t *testing.T, root string) map[string]*pkg {
	t.Helper()
	pkgs := map[string]*pkg{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			if path != root {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, src, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		p := pkgs[rel]
		if p == nil {
			p = &pkg{dir: rel}
			pkgs[rel] = p
		}
		p.documented = p.documented || f.Doc != nil
		for _, imp := range f.Imports {
			ip, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				return err
			}
			if !slices.Contains(p.imports, ip) {
				p.imports = append(p.imports, ip)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// addDeps fills in every package's whole dependency graph, with one go list.
func addDeps(t *testing.T, root string, pkgs map[string]*pkg) {
	t.Helper()
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}\t{{join .Deps \" \"}}", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, deps, _ := strings.Cut(line, "\t")
		dir := "."
		if path != strings.TrimSuffix(mod, "/") {
			dir = strings.TrimPrefix(path, mod)
		}
		if p := pkgs[dir]; p != nil {
			p.deps = strings.Fields(deps)
		}
	}
}

func sortedKeys(m map[string]*pkg) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
