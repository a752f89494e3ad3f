package scanner

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/scan/artifact"
)

// teamGates applies one scan policy to the repositories under team/.
type teamGates struct{ gate scan.RepoGate }

func (g *teamGates) For(repo string) (*scan.RepoGate, bool) {
	if strings.HasPrefix(repo, "team/") {
		return &g.gate, true
	}
	return nil, false
}

// withPolicy gives the harness's scanner one scan policy for team/**
// (a scan at a tag push is given 60s unless it says otherwise).
func (h *harness) withPolicy(g scan.RepoGate) {
	h.t.Helper()
	if g.Timeout == 0 {
		g.Timeout = 60 * time.Second
	}
	if err := g.Gate.Validate(); err != nil {
		h.t.Fatal(err)
	}
	h.svc.gates = &teamGates{gate: g}
}

// manifestOf returns the stored manifest of repo@d and its media type.
func (h *harness) manifestOf(repo string, d digest.Digest) ([]byte, string) {
	h.t.Helper()
	mt, payload, found, err := readManifest(context.Background(), h.repo(repo), d)
	if err != nil || !found {
		h.t.Fatalf("manifest %s@%s: %v", repo, d, err)
	}
	return payload, mt
}

// TestStoredOutcome: what a tag push learns of a digest's scan without
// scanning, in each status.
func TestStoredOutcome(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, nil)
	h.withPolicy(scan.RepoGate{Name: "prod", Mode: "audit", Gate: scan.GatePolicy{MaxSeverity: "critical", UnknownSeverity: "unknown"}})
	deb := debianImage(t)
	d := h.pushImage("team/app", "", deb)
	m, mt := h.manifestOf("team/app", d)

	o := h.svc.StoredOutcome(ctx, "team/app", d, m, mt)
	if o.Status != scan.StatusNotScanned || !strings.Contains(o.Reason, "no vulnerability database") {
		t.Errorf("before a database: %+v", o)
	}
	h.importDB()
	// A tag push that uploads the manifest: it is scanned once stored.
	unstored := testImage(t, map[string]string{"etc/os-release": "ID=debian\nVERSION_ID=\"12\"\n"})
	um, err := unstored.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	ud, _ := unstored.Digest()
	if o := h.svc.StoredOutcome(ctx, "team/new", digest.Digest(ud.String()), um, ""); o.Status != scan.StatusPending || o.Report != nil {
		t.Errorf("before its scan: %+v", o)
	}
	h.appendEvent(outbox.KindPush, "team/app", d, "")
	h.waitFor("the report", func() bool { return h.reports("team/app", d) == 1 })
	o = h.svc.StoredOutcome(ctx, "team/app", d, m, mt)
	if o.Status != scan.StatusScanned || o.Report == nil || len(o.Report.Findings) == 0 || o.Report.DB.Digest == "" {
		t.Fatalf("after its scan: %+v", o)
	}
	if g := o.Gate; g == nil || g.Name != "prod" || g.Mode != "audit" || g.MaxSeverity != "critical" || !g.Result.Pass {
		t.Errorf("policy outcome %+v", o.Gate)
	}
	if pass, _ := o.Admits(); !pass {
		t.Error("a passing report is not admitted")
	}

	// Another repository has no policy: the report, no judgement.
	other := h.pushImage("other/app", "", deb)
	h.appendEvent(outbox.KindPush, "other/app", other, "")
	h.waitFor("the other report", func() bool { return h.reports("other/app", other) == 1 })
	if o := h.svc.StoredOutcome(ctx, "other/app", other, m, mt); o.Status != scan.StatusScanned || o.Gate != nil {
		t.Errorf("without a policy: %+v", o)
	}

	// A layer that is not gzip: the scan failed, with the reason.
	bad, err := mutate.AppendLayers(empty.Image, static.NewLayer([]byte("this is not a gzip stream"), types.DockerLayer))
	if err != nil {
		t.Fatal(err)
	}
	bd := h.pushImage("team/bad", "", bad)
	h.appendEvent(outbox.KindPush, "team/bad", bd, "")
	h.waitFor("the failure", func() bool { return h.svc.store.failure("team/bad", bd) != "" })
	bm, bmt := h.manifestOf("team/bad", bd)
	if o := h.svc.StoredOutcome(ctx, "team/bad", bd, bm, bmt); o.Status != scan.StatusFailed || !strings.HasPrefix(o.Reason, "scan failed") {
		t.Errorf("a failed scan: %+v", o)
	}

	// An index is not scanned itself, and not gated.
	idx := h.pushIndex("team/app", deb)
	im, imt := h.manifestOf("team/app", idx)
	o = h.svc.StoredOutcome(ctx, "team/app", idx, im, imt)
	if pass, _ := o.Admits(); o.Status != scan.StatusNotScanned || !strings.Contains(o.Reason, "index") || !pass {
		t.Errorf("an index: %+v", o)
	}
}

// TestScanPush: the scan at an enforce tag push, judged by the policy.
func TestScanPush(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, nil)
	h.withPolicy(scan.RepoGate{Name: "strict", Mode: "enforce", Gate: scan.GatePolicy{MaxSeverity: "none"}})
	d := h.pushImage("team/app", "", debianImage(t))
	m, mt := h.manifestOf("team/app", d)

	o, err := h.svc.ScanPush(ctx, "team/app", d, m, mt)
	if pass, reason := o.Admits(); err != nil || o.Status != scan.StatusNotScanned || pass || !strings.Contains(reason, "no vulnerability database") {
		t.Errorf("before a database: %+v, %v", o, err)
	}
	h.importDB()
	o, err = h.svc.ScanPush(ctx, "team/app", d, m, mt)
	if err != nil || o.Status != scan.StatusScanned || o.Report == nil || len(o.Report.Findings) == 0 {
		t.Fatalf("scan at the push: %+v, %v", o, err)
	}
	pass, reason := o.Admits()
	if pass || !strings.Contains(reason, `vulnerability policy "strict"`) || o.Gate == nil || o.Gate.MaxSeverity != "none" ||
		o.Gate.UnknownSeverity != "critical" || len(o.Gate.Result.Violations) != len(o.Report.Findings) {
		t.Errorf("judgement: %v %q %+v", pass, reason, o.Gate)
	}

	clean := h.pushImage("team/clean", "", testImage(t, map[string]string{"hello.txt": "no packages"}))
	cm, cmt := h.manifestOf("team/clean", clean)
	o, err = h.svc.ScanPush(ctx, "team/clean", clean, cm, cmt)
	if pass, _ := o.Admits(); err != nil || o.Status != scan.StatusScanned || len(o.Report.Findings) != 0 || !pass {
		t.Errorf("a clean image: %+v, %v", o, err)
	}
}

// TestNewestIgnoresClientSBOM: a CycloneDX SBOM a client pushed, however new, is not taken
// for the scanner's: only the scanner's carry its reserved annotation.
func TestNewestIgnoresClientSBOM(t *testing.T) {
	t.Parallel()
	ours := v1.Descriptor{Digest: digest.Digest("sha256:" + strings.Repeat("a", 64)), ArtifactType: artifact.ArtifactTypeSBOM,
		Annotations: map[string]string{v1.AnnotationCreated: "2026-01-01T00:00:00Z", artifact.AnnotationPackages: "3"}}
	client := v1.Descriptor{Digest: digest.Digest("sha256:" + strings.Repeat("b", 64)), ArtifactType: artifact.ArtifactTypeSBOM,
		Annotations: map[string]string{v1.AnnotationCreated: "2999-01-01T00:00:00Z"}}
	got, ok := newest([]v1.Descriptor{client, ours}, artifact.ArtifactTypeSBOM)
	if !ok || got.Digest != ours.Digest {
		t.Fatalf("newest = %s (ok %v), want the scanner's %s", got.Digest, ok, ours.Digest)
	}
	if _, ok := newest([]v1.Descriptor{client}, artifact.ArtifactTypeSBOM); ok {
		t.Fatal("a client's SBOM alone was taken for the scanner's")
	}
}
