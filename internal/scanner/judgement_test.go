package scanner

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/portcullis/portcullis/auth/audit"
	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/scan"
)

// TestAuditModeJudgementRecorded: an image that fails an audit-mode scan
// policy gets a stored report that says so, a count in the metric, an
// audit line; the listing summary carries the judgement; an image outside
// every policy gets none of it.
func TestAuditModeJudgementRecorded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, nil)
	h.withPolicy(scan.RepoGate{Name: "prod", Mode: "audit", Gate: scan.GatePolicy{MaxSeverity: "high"}})
	var lines bytes.Buffer
	log, err := audit.New(&lines, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h.svc.audit = log
	h.importDB()
	d := h.pushImage("team/deb", "v1", debianImage(t))
	h.appendEvent(outbox.KindTag, "team/deb", d, "v1")
	other := h.pushImage("other/deb", "v1", debianImage(t))
	h.appendEvent(outbox.KindTag, "other/deb", other, "v1")
	h.waitFor("the reports", func() bool { return h.reports("team/deb", d) == 1 && h.reports("other/deb", other) == 1 })
	// The judgement is counted after the report is stored, logged and audited.
	h.waitFor("the judgement", func() bool {
		return testutil.ToFloat64(h.svc.policyResults.WithLabelValues("prod", "audit", "failed")) >= 1
	})

	report, _, err := h.svc.storedVerdict(ctx, "team/deb", d)
	if err != nil || report == nil {
		t.Fatalf("stored report: %v", err)
	}
	p := report.RepositoryPolicy
	if p == nil || p.Name != "prod" || p.Mode != "audit" || p.Passed || p.Violations == 0 || p.UnknownSeverity != "critical" {
		t.Errorf("the stored report's repository policy: %+v", p)
	}
	if report.Policy != nil {
		t.Errorf("a threshold result in a stored report: %+v", report.Policy)
	}
	if report, _, _ := h.svc.storedVerdict(ctx, "other/deb", other); report == nil || report.RepositoryPolicy != nil {
		t.Errorf("a report outside every policy carries one: %+v", report)
	}

	if n := testutil.ToFloat64(h.svc.policyResults.WithLabelValues("prod", "audit", "failed")); n != 1 {
		t.Errorf("failed judgements counted: %v, want 1", n)
	}
	var e audit.Event
	for _, line := range strings.Split(strings.TrimSpace(lines.String()), "\n") {
		if json.Unmarshal([]byte(line), &e) == nil && e.Kind == audit.KindScan {
			break
		}
	}
	if e.Kind != audit.KindScan || e.Repository != "team/deb" || e.Digest != d.String() || e.Result != audit.ResultFailure || e.Rule != "prod" {
		t.Errorf("audit lines:\n%s", lines.String())
	}
	if strings.Contains(lines.String(), "other/deb") {
		t.Errorf("an image outside every policy audited:\n%s", lines.String())
	}

	manifest, mt := h.manifestOf("team/deb", d)
	s := h.svc.Summary(ctx, "team/deb", d, mt, manifest)
	if s.Status != scan.StatusScanned || s.Policy == nil || s.Policy.Passed || !s.Reaches("critical") {
		t.Errorf("summary: %+v (policy %+v)", s, s.Policy)
	}
}
