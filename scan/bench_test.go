package scan

import (
	"io"
	"testing"

	"github.com/portcullis/portcullis/scan/osv"
	"github.com/portcullis/portcullis/scan/vulndb"
)

// BenchmarkRunSmallImage measures `registry scan` on a small Debian image (the dpkg status
// and os-release of the debian fixture) against the test bundle: the database is read on
// every run, as the command does.
func BenchmarkRunSmallImage(b *testing.B) { benchRun(b, debianLayers(b)) }

// benchRun measures Run on an image of layers against the test bundle.
func benchRun(b *testing.B, layers [][]byte) {
	dir := testVulnDB(b)
	archive := writeDockerTar(b, imageOf(b, layers...))
	for b.Loop() {
		if _, err := Run(b.Context(), ScanOptions{Archive: archive, VulnDB: dir, Format: "json"}, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServerScanSmallImage measures what the server does for a small image pushed to
// it, the database loaded once: read the layers (none indexed before) and match through a
// new Matcher. The target is under 100 ms.
func BenchmarkServerScanSmallImage(b *testing.B) {
	db, err := vulndb.Load(b.Context(), testVulnDB(b), vulndb.Options{})
	if err != nil {
		b.Fatal(err)
	}
	img := imageOf(b, debianLayers(b)...)
	var findings int
	for b.Loop() {
		stored, err := NewIndexer(IndexOptions{}).Inventory(b.Context(), img, "")
		if err != nil {
			b.Fatal(err)
		}
		findings = len(NewMatcher(db).Report(stored, Policy{FailOn: osv.High}).Findings)
	}
	if findings == 0 {
		b.Fatal("no findings: the fixture is not exercising the matcher")
	}
	b.ReportMetric(float64(findings), "findings")
}

// BenchmarkRunLanguageImage is BenchmarkRunSmallImage on an image with a Go binary, npm,
// Python and Java packages (the languages fixture): the Go archive, the largest one these
// packages need, is loaded.
func BenchmarkRunLanguageImage(b *testing.B) { benchRun(b, languageLayers(b)) }
