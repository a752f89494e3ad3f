package scan

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// osvScannerVersion is the peer scanner the design names (DESIGN.md §6). Install it with
//
//	CGO_ENABLED=0 GOBIN=~/.cache/portcullis-tools/osv-scanner-v2.5.0 \
//	  go install github.com/google/osv-scanner/v2/cmd/osv-scanner@v2.5.0
//	ln -sf ~/.cache/portcullis-tools/osv-scanner-v2.5.0/osv-scanner ~/.cache/portcullis-tools/bin/osv-scanner
const osvScannerVersion = "2.5.0"

// osvScannerPath finds osv-scanner: $OSV_SCANNER, then ~/.cache/portcullis-tools/bin, then PATH.
func osvScannerPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("OSV_SCANNER"); p != "" {
		return p
	}
	if home, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(home, ".cache", "portcullis-tools", "bin", "osv-scanner")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("osv-scanner")
	if err != nil {
		t.Fatalf("osv-scanner v%s not found ($OSV_SCANNER, ~/.cache/portcullis-tools/bin, PATH): the differential test needs it; see osvScannerVersion for the install command", osvScannerVersion)
	}
	return p
}

// triple is what the differential test compares: the package (binary package for OS
// packages), its version and the vulnerability id.
type triple struct{ Package, Version, ID string }

// reviewedDifference is a known, explained disagreement with osv-scanner.
type reviewedDifference struct {
	triple
	onlyOurs bool // true: we report it and osv-scanner does not; false: the reverse
	reason   string
}

var reviewedDifferences = map[string][]reviewedDifference{
	"languages": {{
		triple:   triple{"werkzeug", "2.3.7", "GHSA-hrfv-mqp8-q5rw"},
		onlyOurs: true,
		reason: "PyPI names are case- and separator-insensitive (PEP 503); the record names " +
			"\"Werkzeug\", the installed metadata \"werkzeug\". osv.dev's API normalizes, but " +
			"osv-scanner's offline zip matcher compares names exactly and misses it.",
	}},
	"ubuntu": ubuntuLTSDifferences(),
	"wolfi": {{
		triple:   triple{"libcrypto3", "3.3.1-r0", "WOLFI-TEST-0002"},
		onlyOurs: true,
		reason: "Wolfi's and Chainguard's OSV feed lists the subpackages an advisory affects by " +
			"their own names (wolfictl's OSV export, since 2024), so that scanners need not map a " +
			"subpackage to its origin. osv-scanner looks apk packages up by origin only and misses " +
			"a record that names the subpackage libcrypto3; we look Wolfi packages up by both names.",
	}},
	"rocky": {{
		triple: triple{"bash", "5.1.8-6.el9", "RLSA-TEST-0003"},
		reason: "osv-scanner gives Rocky Linux packages the bare ecosystem \"Rocky Linux\", which " +
			"its matcher takes to be every release, so the record's Rocky Linux:8 entry (fixed in " +
			"5.1.8-9.el8) applies to a Rocky Linux 9 image. We file the packages under the image's " +
			"major release, Rocky Linux:9, whose entry is fixed in the installed version.",
	}},
	"rhel": {
		{
			triple: triple{"bash", "5.1.8-6.el9", "RHSA-TEST-0002"},
			reason: "osv-scanner reads no CPE_NAME for RHEL and gives its packages the bare " +
				"ecosystem \"Red Hat\", which matches every Red Hat stream: here a RHEL 8 entry " +
				"(Red Hat:enterprise_linux:8::baseos) on a RHEL 9 image. We match the image's " +
				"release, Red Hat:enterprise_linux:9, in any of its repositories.",
		},
		{
			triple: triple{"tzdata", "2023c-1.el9", "RHSA-TEST-0003"},
			reason: "the entry is for the 9.2 extended update support stream " +
				"(Red Hat:rhel_eus:9.2::baseos), a subscription channel, not the RHEL 9 " +
				"repositories an image updates from; osv-scanner's bare \"Red Hat\" matches it.",
		},
	},
}

// ubuntuLTSDifferences: osv.dev files Ubuntu's long-term releases as "Ubuntu:22.04:LTS".
// osv-scanner gives the packages of an Ubuntu 22.04 image the ecosystem "Ubuntu:22.04" and
// its offline matcher compares ecosystems exactly, so it matches no record of an LTS release
// (with the same records filed under "Ubuntu:22.04" it reports these three findings). We
// index the LTS records under the release.
func ubuntuLTSDifferences() []reviewedDifference {
	const reason = "osv-scanner's offline matcher misses every Ubuntu:22.04:LTS record on an Ubuntu 22.04 image"
	var out []reviewedDifference
	for _, w := range ubuntuWant() {
		out = append(out, reviewedDifference{triple: triple{w.Package, w.Version, w.ID}, onlyOurs: true, reason: reason})
	}
	return out
}

func TestDifferentialOSVScanner(t *testing.T) {
	bin := osvScannerPath(t)
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte(osvScannerVersion)) {
		t.Fatalf("%s --version: %v\n%s\nwant v%s", bin, err, out, osvScannerVersion)
	}
	dbDir, _ := loadTestDB(t)
	for _, tc := range []struct {
		name   string
		layers func(testing.TB) [][]byte
	}{
		{"debian", debianLayers},
		{"alpine", alpineLayers},
		{"ubuntu", ubuntuLayers},
		{"wolfi", wolfiLayers},
		{"languages", languageLayers},
		{"rocky", rockyLayers},
		{"rhel", rhelLayers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			archive := writeDockerTar(t, imageOf(t, tc.layers(t)...))

			var ours bytes.Buffer
			if _, err := Run(t.Context(), ScanOptions{Archive: archive, VulnDB: dbDir, Format: "json"}, &ours); err != nil {
				t.Fatal(err)
			}
			var r Report
			if err := json.Unmarshal(ours.Bytes(), &r); err != nil {
				t.Fatal(err)
			}
			var got []triple
			for _, f := range r.Findings {
				got = append(got, triple{f.Package, f.Version, f.ID})
			}

			// The artifact preset is osv-scanner's default for images; the two JavaScript
			// extractors and the rpm one are added because the preset leaves out
			// package-lock.json, node_modules/*/package.json and rpm databases, which we read.
			cmd := exec.Command(bin, "scan", "image", "--archive", "--offline",
				"--local-db-path", dbDir, "--format", "json",
				"--experimental-plugins", "artifact",
				"--experimental-plugins", "javascript/packagejson",
				"--experimental-plugins", "javascript/packagelockjson",
				"--experimental-plugins", "os/rpm",
				archive)
			cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) { // 1: vulnerabilities found
				t.Fatalf("osv-scanner: %v\n%s", err, stderr.String())
			}
			var peer struct {
				Results []struct {
					Packages []struct {
						Package struct {
							Name          string `json:"name"`
							OSPackageName string `json:"os_package_name"`
							Version       string `json:"version"`
						} `json:"package"`
						Vulnerabilities []struct {
							ID string `json:"id"`
						} `json:"vulnerabilities"`
					} `json:"packages"`
				} `json:"results"`
			}
			if err := json.Unmarshal(stdout.Bytes(), &peer); err != nil {
				t.Fatalf("osv-scanner output: %v\n%s", err, stderr.String())
			}
			var theirs []triple
			for _, res := range peer.Results {
				for _, p := range res.Packages {
					name := p.Package.Name
					if p.Package.OSPackageName != "" {
						name = p.Package.OSPackageName
					}
					for _, v := range p.Vulnerabilities {
						theirs = append(theirs, triple{name, p.Package.Version, v.ID})
					}
				}
			}

			// Apply the reviewed differences, each of which must still occur.
			for _, d := range reviewedDifferences[tc.name] {
				list := &theirs
				if !d.onlyOurs {
					list = &got
				}
				in, out := slices.Contains(got, d.triple), slices.Contains(theirs, d.triple)
				if (d.onlyOurs && !(in && !out)) || (!d.onlyOurs && !(out && !in)) {
					t.Errorf("reviewed difference %+v no longer occurs; remove it (%s)", d.triple, d.reason)
					continue
				}
				*list = append(*list, d.triple)
			}
			less := func(a, b triple) int {
				if c := strings.Compare(a.Package, b.Package); c != 0 {
					return c
				}
				if c := strings.Compare(a.Version, b.Version); c != 0 {
					return c
				}
				return strings.Compare(a.ID, b.ID)
			}
			slices.SortFunc(got, less)
			got = slices.Compact(got)
			slices.SortFunc(theirs, less)
			theirs = slices.Compact(theirs)
			if len(got) == 0 {
				t.Fatal("no findings: the fixture is not exercising anything")
			}
			if diff := cmp.Diff(theirs, got); diff != "" {
				t.Errorf("(package, version, id) sets differ (-osv-scanner +ours):\n%s", diff)
			}
		})
	}
}
