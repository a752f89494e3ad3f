package scanner

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/auth/audit"
	"github.com/portcullis/portcullis/scan"
)

// judgeStored sets report's RepositoryPolicy: the judgement of repo's scan
// policy, when one applies, as the stored report carries it. It returns
// the judgement, nil without a policy.
func (s *Service) judgeStored(repo string, report *scan.Report) *scan.GateOutcome {
	g := s.gateFor(repo)
	if g == nil {
		report.RepositoryPolicy = nil
		return nil
	}
	o := g.Judge(report, s.now())
	report.RepositoryPolicy = o.Summary()
	return o
}

// policyChanged reports whether the repository policy's judgement differs
// between two reports of an image: a report is stored again for it.
func policyChanged(prev, cur *scan.Report) bool {
	if prev == nil {
		return true
	}
	a, b := prev.RepositoryPolicy, cur.RepositoryPolicy
	if a == nil || b == nil {
		return a != b
	}
	return *a != *b
}

// notePolicy makes a stored report's judgement visible: every judgement is
// counted (portcullis_scan_policy_results_total{policy,mode,result}), and a
// failure is logged and written to the audit log. In audit mode nothing
// else records it: the image is neither refused nor withheld.
func (s *Service) notePolicy(ctx context.Context, repo string, d digest.Digest, o *scan.GateOutcome) {
	if o == nil {
		return
	}
	result := "passed"
	if !o.Result.Pass {
		result = "failed"
	}
	// Counted last, once the failure is logged and audited.
	defer s.policyResults.WithLabelValues(o.Name, o.Mode, result).Inc()
	if o.Result.Pass {
		return
	}
	reason := fmt.Sprintf("vulnerability policy %q (%s): %s", o.Name, o.Mode, o.Result.Reason)
	s.log.WarnContext(ctx, "image fails its scan policy", "repo", repo, "digest", d, "policy", o.Name, "mode", o.Mode,
		"violations", len(o.Result.Violations), "reason", o.Result.Reason)
	s.audit.Record(ctx, audit.Event{Kind: audit.KindScan, Action: "scan", Repository: repo, Digest: d.String(),
		Result: audit.ResultFailure, Rule: o.Name, Reason: reason})
}

// Summary returns what is known of repo@d's scan, in brief, for listings:
// the report this node remembers (kept current by re-matching), else what
// storage holds (StoredOutcome), judged by the repository's scan policy as
// it is configured now.
func (s *Service) Summary(ctx context.Context, repo string, d digest.Digest, mediaType string, manifest []byte) *scan.Summary {
	if report := s.store.report(repo, d); report != nil {
		return scan.Summarize(judge(s.gateFor(repo), report, s.now()))
	}
	return scan.Summarize(s.StoredOutcome(ctx, repo, d, manifest, mediaType))
}
