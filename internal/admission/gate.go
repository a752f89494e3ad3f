package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis/portcullis/auth/audit"
	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/scan"
	"github.com/portcullis/portcullis/trust"
)

// Verifier decides whether content is trusted.
type Verifier interface {
	// Policy returns the policy that applies to repo; ok false when none does.
	Policy(repo string) (name, version string, mode policy.Mode, ok bool)
	// VerifyWithParents verifies d, counting signatures on the indexes
	// parents that list it.
	VerifyWithParents(ctx context.Context, repo string, d digest.Digest, parents []digest.Digest) (trust.Verdict, error)
}

// ScanChecker evaluates vulnerability scan policies.
type ScanChecker interface {
	// ScanMode returns the scan policy mode of repo, or "".
	ScanMode(repo string) policy.Mode
	// ScanPush scans a manifest being tagged; the error is a failure to
	// read storage.
	ScanPush(ctx context.Context, repo string, d digest.Digest, manifest []byte, mediaType string) (scan.Outcome, error)
	// StoredOutcome returns what is known of repo@d's scan, without
	// scanning.
	StoredOutcome(ctx context.Context, repo string, d digest.Digest, manifest []byte, mediaType string) scan.Outcome
	// CheckStored evaluates the newest stored report of repo@d.
	CheckStored(ctx context.Context, repo string, d digest.Digest) (pass, decided bool, reason string)
}

// parentFinder finds the tagged indexes that list a manifest.
type parentFinder interface {
	Parents(ctx context.Context, repo string, d digest.Digest) ([]digest.Digest, error)
}

// scanMode returns the scan policy mode of repo, or "". Enforce is
// quarantine in a repository nobody pushes to: what cannot be refused at
// the push is withheld from readers until its scan passes.
func (g *Gate) scanMode(repo string) policy.Mode {
	if g.scans == nil {
		return ""
	}
	m := g.scans.ScanMode(repo)
	if m == policy.ModeEnforce && g.readOnly != nil && g.readOnly(repo) {
		return policy.ModeQuarantine
	}
	return m
}

// mode returns the trust mode of repo, or "" when no policy applies.
func (g *Gate) mode(repo string) policy.Mode {
	if g.verifier == nil {
		return ""
	}
	_, _, m, ok := g.verifier.Policy(repo)
	if !ok {
		return ""
	}
	return m
}

// Gate is the admission layer the front handler calls.
type Gate struct {
	verifier Verifier // nil: no trust policies
	parents  parentFinder
	scans    ScanChecker // nil: no scan policies
	webhooks []*webhook
	pushers  *Pushers
	audit    *audit.Log
	log      *slog.Logger
	verdicts *prometheus.CounterVec
	sigs     *prometheus.CounterVec
	webhookc *prometheus.CounterVec
	obs      gateMetrics
	owners   *ownerIndex
	content  manifestSource
	readOnly func(repo string) bool
}

// Options are a Gate's dependencies; Verifier and Audit may be nil.
type Options struct {
	Verifier Verifier
	// Parents finds the indexes a manifest belongs to; required with a
	// Verifier.
	Parents parentFinder
	// Scans evaluates scan policies; nil when scanning is off.
	Scans ScanChecker
	// Manifests reads a repository's manifests, for reads of gated
	// repositories; nil withholds no blob and follows no subject.
	Manifests manifestSource
	Webhooks  []config.Webhook
	Pushers   *Pushers
	Audit     *audit.Log
	// ReadOnly reports the repositories nobody pushes to (pull-through
	// caches): a scan policy in enforce mode, a gate at the tag push,
	// gates their reads instead, as quarantine does. Default none.
	ReadOnly func(repo string) bool
	Log      *slog.Logger
	Metrics  prometheus.Registerer
}

// New returns a Gate.
func New(o Options) (*Gate, error) {
	if o.Log == nil || o.Pushers == nil || o.Metrics == nil {
		return nil, errors.New("admission: logger, pusher store and metrics registry are required")
	}
	if o.Verifier != nil && o.Parents == nil {
		return nil, errors.New("admission: a verifier needs a parent finder")
	}
	g := &Gate{verifier: o.Verifier, parents: o.Parents, scans: o.Scans, pushers: o.Pushers, audit: o.Audit, log: o.Log,
		owners: newOwnerIndex(o.Manifests), content: o.Manifests, readOnly: o.ReadOnly,
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "admission", Name: "verdicts_total",
			Help: "Trust verdicts by mode, check (tag, pull, api) and result (trusted, untrusted, error).",
		}, []string{"mode", "check", "result"}),
		sigs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "admission", Name: "signature_checks_total",
			Help: "Signatures checked by kind (cosign-bundle, cosign-legacy, notation-jws, notation-cose) and result (valid, invalid).",
		}, []string{"kind", "result"}),
		webhookc: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "admission", Name: "webhook_reviews_total",
			Help: "Admission webhook reviews by webhook name and result (allowed, denied, failed).",
		}, []string{"webhook", "result"}),
	}
	// A Gate built again from a reloaded configuration counts on in the
	// series the first one registered.
	for _, c := range []**prometheus.CounterVec{&g.verdicts, &g.sigs, &g.webhookc} {
		var err error
		if *c, err = registerOrAdopt(o.Metrics, *c); err != nil {
			return nil, err
		}
	}
	for _, wc := range o.Webhooks {
		w, err := newWebhook(wc, o.Log)
		if err != nil {
			return nil, err
		}
		g.webhooks = append(g.webhooks, w)
	}
	obs, err := newGateMetrics(o.Metrics, o.Webhooks)
	if err != nil {
		return nil, err
	}
	g.obs = obs
	return g, nil
}

// Active reports whether the gate has anything to check in repo.
func (g *Gate) Active(repo string) bool {
	if g.mode(repo) != "" || g.scanMode(repo) != "" {
		return true
	}
	for _, w := range g.webhooks {
		if w.matches(repo) {
			return true
		}
	}
	return false
}

// TagPush describes a manifest PUT that creates or moves a tag.
type TagPush struct {
	Repository string
	Tag        string
	Digest     digest.Digest
	MediaType  string
	Pusher     string
	Addr       string
	// Manifest is the body being pushed.
	Manifest  []byte
	RequestID string
	// Host is the registry's host as the client named it, for the
	// instructions in a refusal.
	Host string
}

// admitTag decides a tag push. It returns nil to accept, or an errcode
// error (DENIED) whose message tells the client what to do.
func (g *Gate) admitTag(ctx context.Context, p TagPush) error {
	var verdict *trust.Verdict
	if g.verifier != nil {
		if mode := g.mode(p.Repository); mode != "" {
			v, err := g.verify(ctx, "tag", p.Repository, p.Digest)
			if errors.Is(err, trust.ErrNotFound) {
				// Tagging content in the same PUT that uploads it: it cannot
				// have been signed yet.
				v, err = trust.Verdict{Repository: p.Repository, Digest: p.Digest, Mode: mode,
					Reason: "the manifest is not in the repository yet, so it has no signature"}, nil
				if name, _, _, ok := g.verifier.Policy(p.Repository); ok {
					v.Policy = name
				}
			}
			if err != nil {
				if mode == policy.ModeEnforce {
					return errcode.ErrorCodeUnavailable.WithMessage("signature verification failed; retry later")
				}
			} else {
				verdict = &v
				if mode == policy.ModeEnforce && !v.Trusted {
					g.recordDenial(ctx, p, "untrusted: "+v.Reason, v.Policy)
					return errcode.ErrorCodeDenied.WithMessage(enforceMessage(p, v))
				}
			}
		}
	}
	// The scan gate, then the webhooks: they see the signature verdict and
	// the scan, and are asked only when neither refused.
	var scanned *scan.Outcome
	if g.scanMode(p.Repository) == policy.ModeEnforce {
		o, err := g.scans.ScanPush(ctx, p.Repository, p.Digest, p.Manifest, p.MediaType)
		if err != nil {
			g.log.ErrorContext(ctx, "scan at tag push", "repo", p.Repository, "digest", p.Digest, "err", err)
			return errcode.ErrorCodeUnavailable.WithMessage("vulnerability scan failed; retry later")
		}
		if pass, reason := o.Admits(); !pass {
			g.recordDenial(ctx, p, reason, "")
			return errcode.ErrorCodeDenied.WithMessage(fmt.Sprintf("%s@%s is refused: %s", p.Repository, p.Digest, oneLine(reason)))
		}
		scanned = &o
	}
	var hooks []*webhook
	for _, w := range g.webhooks {
		if w.matches(p.Repository) {
			hooks = append(hooks, w)
		}
	}
	if len(hooks) == 0 {
		return nil
	}
	rv := Review{APIVersion: ReviewAPIVersion, RequestID: p.RequestID, Repository: p.Repository, Tag: p.Tag,
		Digest: p.Digest.String(), MediaType: p.MediaType, Pusher: p.Pusher, Verdict: verdict, Scan: g.scanSummary(ctx, p, scanned)}
	for _, w := range hooks {
		start := time.Now()
		resp, err := w.review(ctx, rv)
		g.obs.webhookSeconds.WithLabelValues(w.cfg.Name).Observe(time.Since(start).Seconds())
		if err != nil {
			g.webhookc.WithLabelValues(w.cfg.Name, "failed").Inc()
			attrs := append([]any{"webhook", w.cfg.Name, "repo", p.Repository, "digest", p.Digest}, failureAttrs(err)...)
			if w.cfg.FailurePolicy == "ignore" {
				g.log.WarnContext(ctx, "admission webhook failed; failure policy ignore", attrs...)
				continue
			}
			g.log.WarnContext(ctx, "admission webhook failed; denying", attrs...)
			msg := fmt.Sprintf("admission webhook %s could not be asked: %v", w.cfg.Name, err)
			g.recordDenial(ctx, p, msg, "")
			return errcode.ErrorCodeDenied.WithMessage(msg + "; the push is refused")
		}
		if !resp.Allowed {
			reason := oneLine(resp.Reason)
			if strings.TrimSpace(reason) == "" {
				reason = "no reason given"
			}
			g.webhookc.WithLabelValues(w.cfg.Name, "denied").Inc()
			g.recordDenial(ctx, p, "webhook "+w.cfg.Name+": "+reason, "")
			return errcode.ErrorCodeDenied.WithMessage(fmt.Sprintf("denied by admission webhook %s: %s", w.cfg.Name, reason))
		}
		g.webhookc.WithLabelValues(w.cfg.Name, "allowed").Inc()
	}
	return nil
}

// scanSummary is the review's scan object: the scan made at this push
// (enforce), else what is stored of the digest's scan.
func (g *Gate) scanSummary(ctx context.Context, p TagPush, scanned *scan.Outcome) *ScanSummary {
	switch {
	case scanned != nil:
		return summarize(*scanned)
	case g.scans == nil:
		return &ScanSummary{Status: scan.StatusNotScanned, Reason: "vulnerability scanning is not running"}
	default:
		return summarize(g.scans.StoredOutcome(ctx, p.Repository, p.Digest, p.Manifest, p.MediaType))
	}
}

func (g *Gate) verify(ctx context.Context, check, repo string, d digest.Digest) (trust.Verdict, error) {
	v, err := g.verifier.VerifyWithParents(ctx, repo, d, nil)
	if err == nil && !v.Trusted && check != "tag" {
		// A child of a signed multi-platform index is covered by the
		// index's signature.
		if parents, perr := g.parents.Parents(ctx, repo, d); perr == nil && len(parents) > 0 {
			v, err = g.verifier.VerifyWithParents(ctx, repo, d, parents)
		}
	}
	mode := string(g.mode(repo))
	for _, sig := range v.Signatures {
		result := "invalid"
		if sig.Valid {
			result = "valid"
		}
		g.sigs.WithLabelValues(string(sig.Kind), result).Inc()
	}
	switch {
	case errors.Is(err, trust.ErrNotFound):
		g.verdicts.WithLabelValues(mode, check, "untrusted").Inc()
	case err != nil:
		g.verdicts.WithLabelValues(mode, check, "error").Inc()
		g.log.ErrorContext(ctx, "verify signatures", "repo", repo, "digest", d, "err", err)
	case v.Trusted:
		g.verdicts.WithLabelValues(mode, check, "trusted").Inc()
	default:
		g.verdicts.WithLabelValues(mode, check, "untrusted").Inc()
	}
	if err == nil && check != "pull" {
		g.audit.Record(ctx, audit.Event{Kind: "verdict", Action: check, Repository: repo, Digest: d.String(),
			Result: resultOf(v), Rule: v.Policy, Reason: v.Reason})
	}
	return v, err
}

func resultOf(v trust.Verdict) string {
	if v.Trusted {
		return "trusted"
	}
	return "untrusted"
}

func (g *Gate) recordDenial(ctx context.Context, p TagPush, reason, rule string) {
	g.audit.RecordWrite(ctx, audit.Write{Subject: p.Pusher, Addr: p.Addr, Action: "tag", Repository: p.Repository,
		Tag: p.Tag, Digest: p.Digest.String(), Err: errors.New(reason), Rule: rule, RequestID: p.RequestID})
}

// enforceMessage tells the pusher exactly how to get the tag accepted, with
// commands that work offline (no transparency log, no public TUF root).
func enforceMessage(p TagPush, v trust.Verdict) string {
	host := p.Host
	if host == "" {
		host = "REGISTRY"
	}
	ref := host + "/" + p.Repository + "@" + p.Digest.String()
	msg := fmt.Sprintf("%s is not signed by a key that policy %q trusts (%s). "+
		"In this repository a tag can only point at signed content: push by digest (crane push IMAGE %s), "+
		"sign that digest (cosign sign --key KEY --tlog-upload=false --use-signing-config=false %s, or notation sign --key NAME %s), "+
		"then tag it (crane tag %s %s)",
		ref, v.Policy, oneLine(v.Reason), ref, ref, ref, ref, p.Tag)
	if mayBeCopied(v) {
		msg += "; if you copied the image from another repository (cosign copy, crane copy), copy its signatures too " +
			"(cosign copy copies them; crane copy does not) or sign it here"
	}
	return msg
}

// mayBeCopied reports a verdict that an image copied without its
// signatures, or with signatures bound to its first repository, would get:
// no signature at all, or one bound to another repository.
func mayBeCopied(v trust.Verdict) bool {
	if len(v.Signatures) == 0 {
		return true
	}
	for _, s := range v.Signatures {
		if strings.Contains(s.Reason, "bound to repository") || strings.Contains(s.Reason, "is for repository") {
			return true
		}
	}
	return false
}

func oneLine(s string) string {
	s = strings.ReplaceAll(strings.ReplaceAll(s, "\r", " "), "\n", " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// Pull describes a manifest read.
type Pull struct {
	Repository string
	Digest     digest.Digest
	// Tag is the tag the reader asked for, "" for a read by digest: a
	// refusal names the digest only to a reader who named it.
	Tag string
	// Login is the reader; CanPush reports that the reader may push to the
	// repository (and so sign: signatures are pushed).
	Login   string
	CanPush bool
}

// allowPull decides a manifest read in a repository whose content is
// gated on reads: a quarantine repository (trust or scan), where content
// that is not released yet is withheld, and an enforce repository, where
// content that is no longer trusted (its signature deleted or replaced, its
// signer's key no longer trusted) is withheld from then on. Its pusher and
// those who may push (and so sign) may read it. It returns nil or a DENIED
// errcode error.
func (g *Gate) allowPull(ctx context.Context, p Pull) error {
	if !g.gated(p.Repository) || p.CanPush {
		return nil
	}
	if p.Login != "" && g.pushers.Pusher(p.Repository, p.Digest) == p.Login {
		return nil
	}
	return g.withheld(ctx, p, 0)
}

// quarantined reports whether a trust or scan policy in quarantine mode
// applies to repo.
func (g *Gate) quarantined(repo string) bool {
	return g.mode(repo) == policy.ModeQuarantine || g.scanMode(repo) == policy.ModeQuarantine
}

// gated reports whether reads of repo's content are checked: in quarantine
// and in trust enforce mode.
func (g *Gate) gated(repo string) bool {
	return g.quarantined(repo) || g.mode(repo) == policy.ModeEnforce
}

// maxSubjectDepth bounds the chain of subjects followed from an artifact
// (a signature of an SBOM of an image) to the content it belongs to.
const maxSubjectDepth = 4

// withheld returns nil when p's content is released, else the DENIED error
// that tells the reader why. An artifact with a subject (a signature, an
// SBOM: a manifest whose config is not an image's) is released with its
// subject, and so is what a signature tag holds (ExemptTag) with the
// digest the tag names; anything else must be trusted in a quarantine or
// enforce repository and pass its scan in a scan quarantine repository.
// depth is 0 for the content the reader asked for, which may not exist (the
// registry core then answers 404); above 0 (a subject, a blob's owner) a
// manifest that does not exist releases nothing.
func (g *Gate) withheld(ctx context.Context, p Pull, depth int) error {
	if g.content != nil {
		mediaType, payload, err := g.content.Manifest(ctx, p.Repository, p.Digest)
		switch {
		case errors.Is(err, trust.ErrNotFound) && depth == 0:
			return nil
		case errors.Is(err, trust.ErrNotFound):
			return errcode.ErrorCodeDenied.WithMessage("withheld: " + p.Repository + " does not hold the content this belongs to")
		case err != nil:
			g.log.ErrorContext(ctx, "read manifest for a pull check", "repo", p.Repository, "digest", p.Digest, "err", err)
			return errcode.ErrorCodeUnavailable.WithMessage("could not check the manifest against the repository's policy; retry later")
		}
		if subject := subjectOf(payload); subject != "" && !runnable(mediaType, payload) {
			if depth >= maxSubjectDepth {
				return errcode.ErrorCodeDenied.WithMessage("withheld: the chain of subjects is too long")
			}
			return g.withheld(ctx, Pull{Repository: p.Repository, Digest: subject, Tag: "-"}, depth+1)
		}
		if subject, ok := signatureTagSubject(p.Tag); ok && ExemptTag(ctx, p.Tag, payload, func(ctx context.Context, d digest.Digest) (digest.Digest, error) {
			_, b, err := g.content.Manifest(ctx, p.Repository, d)
			return subjectOf(b), err
		}) {
			if depth >= maxSubjectDepth {
				return errcode.ErrorCodeDenied.WithMessage("withheld: the chain of subjects is too long")
			}
			return g.withheld(ctx, Pull{Repository: p.Repository, Digest: subject, Tag: "-"}, depth+1)
		}
	}
	byDigest := p.Tag == ""
	name := p.Repository + ":" + p.Tag
	if byDigest {
		name = p.Repository + "@" + p.Digest.String()
	}
	switch mode := g.mode(p.Repository); mode {
	case policy.ModeQuarantine, policy.ModeEnforce:
		v, err := g.verify(ctx, "pull", p.Repository, p.Digest)
		if err != nil {
			return errcode.ErrorCodeUnavailable.WithMessage("signature verification failed; retry later")
		}
		if v.Trusted {
			break
		}
		if mode == policy.ModeEnforce && v.Unexamined > 0 && p.Tag != "" && p.Tag != "-" {
			// A tag in an enforce repository was set on trusted content;
			// while signatures remain to be examined (junk pushed next to
			// the real one) the tag stays pullable: pending work never
			// withholds it, the next check goes on.
			break
		}
		if mode == policy.ModeEnforce {
			g.log.WarnContext(ctx, "pull of content no longer trusted withheld", "repo", p.Repository, "digest", p.Digest, "reason", v.Reason)
			msg := "withheld: " + name + " is no longer signed by a signer that policy " + strconv.Quote(v.Policy) +
				" trusts (a signature was deleted or replaced, or a key is no longer trusted); sign it again"
			if byDigest {
				msg += " (" + oneLine(v.Reason) + ")"
			}
			return errcode.ErrorCodeDenied.WithMessage(msg)
		}
		if !byDigest {
			return errcode.ErrorCodeDenied.WithMessage("quarantined: " + name + " is awaiting a trusted signature")
		}
		return errcode.ErrorCodeDenied.WithMessage(fmt.Sprintf(
			"quarantined: %s is awaiting a trusted signature (%s); GET /api/v1/repositories/%s/manifests/%s/verdict?wait=30s waits for it",
			name, oneLine(v.Reason), p.Repository, p.Digest))
	}
	if g.scanMode(p.Repository) == policy.ModeQuarantine {
		pass, decided, reason := g.scans.CheckStored(ctx, p.Repository, p.Digest)
		switch {
		case !decided && !byDigest:
			return errcode.ErrorCodeDenied.WithMessage("quarantined: " + name + " is awaiting its vulnerability scan")
		case !decided:
			return errcode.ErrorCodeDenied.WithMessage(fmt.Sprintf(
				"quarantined: %s is awaiting its vulnerability scan; GET /api/v1/repositories/%s/manifests/%s/vulnerabilities shows it when done",
				name, p.Repository, p.Digest))
		case !pass && !byDigest:
			return errcode.ErrorCodeDenied.WithMessage("quarantined: " + name + " does not pass the repository's vulnerability policy")
		case !pass:
			return errcode.ErrorCodeDenied.WithMessage(fmt.Sprintf("quarantined: %s: %s", name, oneLine(reason)))
		}
	}
	return nil
}

// runnable reports whether a manifest is a container image or an index
// of them, as opposed to an artifact: a made-up subject does not release an
// image.
func runnable(mediaType string, payload []byte) bool {
	return scan.Classify(mediaType, payload) != scan.KindOther
}

// subjectOf returns the subject a manifest names, "" for none.
func subjectOf(payload []byte) digest.Digest {
	var m struct {
		Subject *struct {
			Digest digest.Digest `json:"digest"`
		} `json:"subject"`
	}
	if json.Unmarshal(payload, &m) != nil || m.Subject == nil || m.Subject.Digest.Validate() != nil {
		return ""
	}
	return m.Subject.Digest
}

// RecordPush remembers who pushed a manifest, for quarantine exemptions.
func (g *Gate) RecordPush(repo string, d digest.Digest, login string) {
	if !g.gated(repo) {
		return
	}
	g.owners.forget(repo)
	if login == "" {
		return
	}
	if err := g.pushers.Record(repo, d, login); err != nil {
		g.log.Warn("record pusher", "repo", repo, "digest", d, "err", err)
	}
}
