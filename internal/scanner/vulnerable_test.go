package scanner

import (
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/osv"
)

// TestVulnerableImages checks the "vulnerable images now" counts: read
// from the metadata database at the first count, then kept up to date by
// remember and forget.
func TestVulnerableImages(t *testing.T) {
	t.Parallel()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	m := &metaStore{db: db, vuln: &vulnerable{db: db}}
	report := func(levels ...osv.Level) *scan.Report {
		r := &scan.Report{}
		for _, l := range levels {
			r.Findings = append(r.Findings, scan.Finding{Severity: osv.Rating{Level: l}})
		}
		return r
	}
	remember := func(repo string, n int, r *scan.Report) {
		t.Helper()
		e := scanned{Subject: v1.Descriptor{Digest: digest.FromBytes([]byte{byte(n)})}, Report: r}
		if err := m.remember(repo, e); err != nil {
			t.Fatal(err)
		}
	}
	remember("a", 1, report(osv.Low, osv.Critical))
	remember("a", 2, report())
	want := func(l osv.Level, n int) {
		t.Helper()
		got, err := m.vuln.counts()
		if err != nil {
			t.Fatal(err)
		}
		if got[l] != n {
			t.Errorf("%s: %d images, want %d (%v)", l, got[l], n, got)
		}
	}
	want(osv.Critical, 1) // read from the database
	remember("b", 3, report(osv.High, osv.Medium))
	want(osv.High, 1)
	remember("a", 1, report(osv.Medium)) // re-matched: no longer critical
	want(osv.Critical, 0)
	want(osv.Medium, 1)
	if err := m.forget("b", digest.FromBytes([]byte{3})); err != nil {
		t.Fatal(err)
	}
	want(osv.High, 0)
}
