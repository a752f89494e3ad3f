package trust

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/policy"
)

// Media and artifact types the Verifier looks for.
const (
	// bundleTypePrefix starts every sigstore bundle media type; cosign 3
	// writes application/vnd.dev.sigstore.bundle.v0.3+json.
	bundleTypePrefix = "application/vnd.dev.sigstore.bundle"
	// notationType is the artifactType of Notation signatures.
	notationType  = "application/vnd.cncf.notary.signature"
	mediaTypeJWS  = "application/jose+json"
	mediaTypeCOSE = "application/cose"
	// cosignSigAnnotation holds the base64 signature of a legacy layer.
	cosignSigAnnotation = "dev.cosignproject.cosign/signature"

	mediaTypeDockerList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// Limits on what one verification reads.
const (
	// maxSignatureBlob bounds a bundle, envelope or simple-signing payload.
	maxSignatureBlob = 1 << 20
	// maxNewSignatures bounds the signatures one verification reads and
	// checks that no earlier one did (results are cached by signature
	// digest): junk signatures pushed next to a real one cost each check at
	// most this much, and the next check goes on where this one stopped.
	maxNewSignatures = 64
	// bundlePredicateAnnotation is the manifest annotation cosign writes on
	// a bundle referrer with the in-toto predicate type it holds; bundles
	// of another predicate than cosign's signature are attestations.
	bundlePredicateAnnotation = "dev.sigstore.bundle.predicateType"
)

// Options tune a Verifier. The zero value means the defaults.
type Options struct {
	// Logger receives debug lines about each signature; default discards.
	Logger *slog.Logger
	// Now is the clock of verdict times and cache expiry; default time.Now.
	// (The verification libraries read the system clock for certificate
	// validity themselves.)
	Now func() time.Time
	// Aliases returns the other repository names, without a registry
	// host, that signatures of repo's content may name: a pull-through
	// cache's repository (dockerhub/library/alpine) holds content signed
	// as the remote's (library/alpine). Default none.
	Aliases func(repo string) []string
}

// Verifier verifies the signatures of manifests against the trust
// policies. It is safe for concurrent use.
type Verifier struct {
	content Content
	rules   policy.Set[*rule]
	cache   *resultCache
	log     *slog.Logger
	now     func() time.Time
	aliases func(repo string) []string
}

// New builds a Verifier from the provisioned trust section of the
// configuration, reading every key, certificate and trusted root it names.
// It returns an error naming the key path or file for an invalid section,
// an unreadable file, or key or certificate material it cannot use.
func New(cfg config.Trust, content Content, opts Options) (*Verifier, error) {
	if content == nil {
		return nil, errors.New("trust: nil content")
	}
	// Provision fills defaults in place: work on copies of the slices, so
	// that the caller's configuration is never written (and several
	// verifiers may be built from one configuration at once).
	cfg.Keys = slices.Clone(cfg.Keys)
	cfg.TrustStores = slices.Clone(cfg.TrustStores)
	cfg.Identities = slices.Clone(cfg.Identities)
	cfg.Policies = slices.Clone(cfg.Policies)
	cfg.Provision()
	rules, err := compile(cfg)
	if err != nil {
		return nil, err
	}
	v := &Verifier{content: content, rules: rules, log: opts.Logger, now: opts.Now, aliases: opts.Aliases}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	if v.now == nil {
		v.now = time.Now
	}
	v.cache = newResultCache(cfg.CacheSize, cfg.CacheTTL.D(), v.now)
	return v, nil
}

// Policy returns the name, version and mode of the policy that applies to
// repo; ok is false when none does.
func (v *Verifier) Policy(repo string) (name, version string, mode policy.Mode, ok bool) {
	r, ok := v.rules.First(repo)
	if !ok {
		return "", "", "", false
	}
	return r.name, r.version, r.mode, true
}

// Verify finds and verifies the signatures of manifest d in repo: referrers
// (sigstore bundles and Notation signatures) and the legacy cosign tag
// sha256-<hex>.sig. It returns an error only when the content cannot be
// read (wrapping ErrNotFound when d itself does not exist); an unsigned or
// untrusted manifest is a Verdict with Trusted false.
func (v *Verifier) Verify(ctx context.Context, repo string, d digest.Digest) (Verdict, error) {
	return v.VerifyWithParents(ctx, repo, d, nil)
}

// VerifyWithParents is Verify where signatures on the given indexes also
// count: a signature on an index covers its children. Each parent must be an
// index in repo that lists d, or lists another such parent (nested
// indexes); the signatures of one that does not are ignored, and the
// verdict's reason says so. Errors are as for Verify.
func (v *Verifier) VerifyWithParents(ctx context.Context, repo string, d digest.Digest, parents []digest.Digest) (Verdict, error) {
	verdict := Verdict{Repository: repo, Digest: d, Time: v.now()}
	if err := d.Validate(); err != nil {
		return verdict, fmt.Errorf("verify %s: %w", d, err)
	}
	r, ok := v.rules.First(repo)
	if !ok {
		verdict.Reason = "no trust policy applies to repository " + repo
		return verdict, nil
	}
	verdict.Policy, verdict.PolicyVersion, verdict.Mode = r.name, r.version, r.mode

	target, err := v.fetchTarget(ctx, repo, d)
	if err != nil {
		return verdict, err
	}
	subjects, notes, err := v.parents(ctx, repo, target, parents)
	if err != nil {
		return verdict, err
	}
	e := &examination{rule: r, budget: maxNewSignatures}
	for _, t := range subjects {
		if err := v.signatures(ctx, e, repo, t); err != nil {
			return verdict, err
		}
	}
	verdict.Signatures, verdict.Unexamined = e.found, e.left
	if e.left > 0 {
		notes = append(notes, fmt.Sprintf("%d more signature(s) not examined yet: at most %d new signatures are checked at a time, the next check goes on", e.left, maxNewSignatures))
	}
	v.decide(r, &verdict, notes)
	return verdict, nil
}

// parents returns the target and the parents that contain it, directly or
// through one another, and notes on the parents that do not.
func (v *Verifier) parents(ctx context.Context, repo string, target targetInfo, parents []digest.Digest) ([]targetInfo, []string, error) {
	subjects := []targetInfo{target}
	seen := map[digest.Digest]bool{target.digest: true}
	var pending []targetInfo
	var notes []string
	for _, p := range parents {
		if seen[p] {
			continue
		}
		seen[p] = true
		pt, err := v.fetchTarget(ctx, repo, p)
		if errors.Is(err, ErrNotFound) {
			notes = append(notes, fmt.Sprintf("parent %s not found", p))
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		pending = append(pending, pt)
	}
	for progress := true; progress; {
		progress = false
		rest := pending[:0]
		for _, pt := range pending {
			if slices.ContainsFunc(subjects, func(s targetInfo) bool { return indexLists(pt, s.digest) }) {
				subjects = append(subjects, pt)
				progress = true
			} else {
				rest = append(rest, pt)
			}
		}
		pending = rest
	}
	for _, pt := range pending {
		notes = append(notes, fmt.Sprintf("parent %s does not list %s", pt.digest, target.digest))
	}
	return subjects, notes, nil
}

// decide fills Signed, Trusted, Signers and Reason from the signatures.
func (v *Verifier) decide(r *rule, verdict *Verdict, notes []string) {
	verdict.Signed = len(verdict.Signatures) > 0
	signed := map[string]bool{}
	for _, s := range verdict.Signatures {
		if s.Valid && s.Signer != "" {
			signed[s.Signer] = true
		}
	}
	verdict.Signers = sortedKeys(signed)
	var missing []string
	for _, name := range r.signers {
		if !signed[name] {
			missing = append(missing, name)
		}
	}
	switch {
	case r.requireAll && len(missing) == 0 && len(r.signers) > 0:
		verdict.Trusted = true
		verdict.Reason = "signed by every required signer: " + strings.Join(verdict.Signers, ", ")
	case !r.requireAll && len(signed) > 0:
		verdict.Trusted = true
		verdict.Reason = "signed by " + strings.Join(verdict.Signers, ", ")
	case !verdict.Signed:
		verdict.Reason = fmt.Sprintf("%s has no signature in %s", verdict.Digest, verdict.Repository)
	case r.requireAll && len(signed) > 0:
		verdict.Reason = fmt.Sprintf("%s lacks signatures from required signers: %s", verdict.Digest, strings.Join(missing, ", "))
	default:
		first := verdict.Signatures[0]
		verdict.Reason = fmt.Sprintf("%s has %d signature(s), none valid from a trusted signer (%s %s: %s)",
			verdict.Digest, len(verdict.Signatures), first.Kind, first.Digest, first.Reason)
	}
	if len(notes) > 0 {
		verdict.Reason += "; " + strings.Join(notes, "; ")
	}
}

// targetInfo is a manifest being verified, or an index that contains it.
type targetInfo struct {
	digest    digest.Digest
	mediaType string
	payload   []byte
}

func (t targetInfo) descriptor() v1.Descriptor {
	return v1.Descriptor{MediaType: t.mediaType, Digest: t.digest, Size: int64(len(t.payload))}
}

// fetchTarget reads a manifest and checks it against its digest.
func (v *Verifier) fetchTarget(ctx context.Context, repo string, d digest.Digest) (targetInfo, error) {
	mt, payload, err := v.content.Manifest(ctx, repo, d)
	if err != nil {
		return targetInfo{}, fmt.Errorf("read manifest %s@%s: %w", repo, d, err)
	}
	if !matches(d, payload) {
		return targetInfo{}, fmt.Errorf("read manifest %s@%s: content does not match its digest", repo, d)
	}
	return targetInfo{digest: d, mediaType: mt, payload: payload}, nil
}

// indexLists reports whether t is an index that lists child.
func indexLists(t targetInfo, child digest.Digest) bool {
	var idx v1.Index
	if err := json.Unmarshal(t.payload, &idx); err != nil {
		return false
	}
	mt := idx.MediaType
	if mt == "" {
		mt = t.mediaType
	}
	if mt != v1.MediaTypeImageIndex && mt != mediaTypeDockerList {
		return false
	}
	return slices.ContainsFunc(idx.Manifests, func(m v1.Descriptor) bool { return m.Digest == child })
}

// matches reports whether data has digest d.
func matches(d digest.Digest, data []byte) bool {
	if d.Validate() != nil || !d.Algorithm().Available() {
		return false
	}
	return d.Algorithm().FromBytes(data) == d
}

// cacheKey names a signature result: the signature, the subject it was
// checked against, the repository and the policy version.
func cacheKey(r *rule, repo string, kind Kind, sig, layer, subject digest.Digest) string {
	return strings.Join([]string{r.version, repo, string(kind), sig.String(), layer.String(), subject.String()}, "|")
}

// examination is the work of one verification: the signatures found so
// far, and the budget of signatures it may still read and check that no
// earlier verification did.
type examination struct {
	rule  *rule
	found []Signature
	// budget is how many uncached signatures may still be checked; left
	// counts those passed over once it ran out.
	budget, left int
}

// add records a checked signature; an attestation is not a signature and
// is not recorded.
func (e *examination) add(s Signature) {
	if !s.attestation {
		e.found = append(e.found, s)
	}
}

// spend takes one uncached check from the budget; false once it is spent.
func (e *examination) spend() bool {
	if e.budget == 0 {
		e.left++
		return false
	}
	e.budget--
	return true
}

// candidate is a referrer that may be a signature.
type candidate struct {
	digest digest.Digest
	kind   Kind
}

// signatures finds and verifies the signatures of t, recording them in e:
// first those whose result is cached, then new ones while e's budget lasts.
func (v *Verifier) signatures(ctx context.Context, e *examination, repo string, t targetInfo) error {
	refs, err := v.content.Referrers(ctx, repo, t.digest)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("list referrers of %s@%s: %w", repo, t.digest, err)
	}
	var uncached []candidate
	for _, ref := range refs {
		var kind Kind
		switch {
		case strings.HasPrefix(ref.ArtifactType, bundleTypePrefix):
			if p, ok := ref.Annotations[bundlePredicateAnnotation]; ok && p != cosignSignPredicate {
				continue // an attestation, not a signature
			}
			kind = KindCosignBundle
		case ref.ArtifactType == notationType:
			kind = KindNotationJWS // refined from the layer's media type
		default:
			continue
		}
		if s, ok := v.cache.get(cacheKey(e.rule, repo, kind, ref.Digest, "", t.digest)); ok {
			e.add(s)
			continue
		}
		uncached = append(uncached, candidate{ref.Digest, kind})
	}
	for _, c := range uncached {
		if !e.spend() {
			continue
		}
		sig, err := v.referrer(ctx, e.rule, repo, t, c.digest, c.kind)
		if err != nil {
			return err
		}
		e.add(sig)
	}
	return v.legacy(ctx, e, repo, t)
}

// referrer verifies one signature artifact found through the referrers API.
func (v *Verifier) referrer(ctx context.Context, r *rule, repo string, t targetInfo, d digest.Digest, kind Kind) (Signature, error) {
	key := cacheKey(r, repo, kind, d, "", t.digest)
	if s, ok := v.cache.get(key); ok {
		return s, nil
	}
	sig := Signature{Kind: kind, Digest: d, Subject: t.digest}
	cacheable := true // false while a missing piece may yet be pushed
	done := func(reason string) (Signature, error) {
		sig.Reason = reason
		if cacheable {
			v.cache.put(key, sig)
		}
		v.log.DebugContext(ctx, "signature", "repo", repo, "digest", t.digest, "signature", d, "kind", sig.Kind, "valid", sig.Valid, "reason", reason)
		return sig, nil
	}
	_, payload, err := v.content.Manifest(ctx, repo, d)
	switch {
	case errors.Is(err, ErrNotFound):
		cacheable = false
		return done("signature manifest not found")
	case err != nil:
		return Signature{}, fmt.Errorf("read signature %s@%s: %w", repo, d, err)
	case !matches(d, payload):
		return Signature{}, fmt.Errorf("read signature %s@%s: content does not match its digest", repo, d)
	}
	var m v1.Manifest
	if err := json.Unmarshal(payload, &m); err != nil {
		return done("signature manifest is not JSON: " + err.Error())
	}
	if m.Subject == nil || m.Subject.Digest != t.digest {
		return done("signature manifest's subject is not " + t.digest.String())
	}
	if len(m.Layers) != 1 {
		return done(fmt.Sprintf("signature manifest has %d layers, want 1", len(m.Layers)))
	}
	layer := m.Layers[0]
	if kind == KindNotationJWS {
		switch layer.MediaType {
		case mediaTypeJWS:
		case mediaTypeCOSE:
			sig.Kind = KindNotationCOSE
		default:
			return done(fmt.Sprintf("unknown Notation envelope type %q", layer.MediaType))
		}
	} else if !strings.HasPrefix(layer.MediaType, bundleTypePrefix) {
		return done(fmt.Sprintf("bundle layer has media type %q", layer.MediaType))
	}
	blob, err := v.blob(ctx, repo, layer)
	if err != nil {
		if errors.Is(err, errUnusable) {
			cacheable = !errors.Is(err, ErrNotFound)
			return done(err.Error())
		}
		return Signature{}, err
	}
	var res result
	if sig.Kind == KindCosignBundle {
		res = verifyBundle(r, repo, v.aliasesOf(repo), t, blob)
	} else {
		res = verifyNotation(ctx, r, repo, v.aliasesOf(repo), t, blob, layer.MediaType)
	}
	sig.Signer, sig.Identity, sig.Valid, sig.attestation = res.signer, res.identity, res.valid, res.attestation
	return done(res.reason)
}

// errUnusable marks a signature blob that is missing, too large or corrupt:
// the signature is invalid, verification goes on.
var errUnusable = errors.New("unusable signature blob")

// blob reads a signature layer and checks it against its descriptor.
func (v *Verifier) blob(ctx context.Context, repo string, desc v1.Descriptor) ([]byte, error) {
	if desc.Size > maxSignatureBlob {
		return nil, fmt.Errorf("%w: %s is %d bytes, the limit is %d", errUnusable, desc.Digest, desc.Size, maxSignatureBlob)
	}
	data, err := v.content.Blob(ctx, repo, desc.Digest, maxSignatureBlob)
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrTooLarge):
		return nil, fmt.Errorf("%w: %s: %w", errUnusable, desc.Digest, err)
	case err != nil:
		return nil, fmt.Errorf("read blob %s@%s: %w", repo, desc.Digest, err)
	case !matches(desc.Digest, data) || int64(len(data)) != desc.Size:
		return nil, fmt.Errorf("%w: %s does not match its descriptor", errUnusable, desc.Digest)
	}
	return data, nil
}

// legacyTag is the tag cosign's legacy layout stores d's signatures under.
func legacyTag(d digest.Digest) string {
	return string(d.Algorithm()) + "-" + d.Encoded() + ".sig"
}

// legacy verifies the signatures in the legacy cosign tag of t, recording
// them in e as signatures does.
func (v *Verifier) legacy(ctx context.Context, e *examination, repo string, t targetInfo) error {
	r := e.rule
	sd, err := v.content.ResolveTag(ctx, repo, legacyTag(t.digest))
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("resolve %s:%s: %w", repo, legacyTag(t.digest), err)
	}
	_, payload, err := v.content.Manifest(ctx, repo, sd)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("read signature %s@%s: %w", repo, sd, err)
	case !matches(sd, payload):
		return fmt.Errorf("read signature %s@%s: content does not match its digest", repo, sd)
	}
	var m v1.Manifest
	if err := json.Unmarshal(payload, &m); err != nil {
		e.add(Signature{Kind: KindCosignLegacy, Digest: sd, Subject: t.digest, Reason: "signature manifest is not JSON: " + err.Error()})
		return nil
	}
	for _, layer := range m.Layers {
		b64, ok := layer.Annotations[cosignSigAnnotation]
		if !ok {
			continue
		}
		key := cacheKey(r, repo, KindCosignLegacy, sd, layer.Digest, t.digest)
		if s, ok := v.cache.get(key); ok {
			e.add(s)
			continue
		}
		if !e.spend() {
			continue
		}
		sig := Signature{Kind: KindCosignLegacy, Digest: sd, Layer: layer.Digest, Subject: t.digest}
		blob, err := v.blob(ctx, repo, layer)
		if err != nil {
			if !errors.Is(err, errUnusable) {
				return err
			}
			sig.Reason = err.Error()
			e.add(sig) // not cached: a missing blob may yet be pushed
			continue
		}
		res := verifyLegacy(r, repo, v.aliasesOf(repo), t, blob, b64, layer.Annotations)
		sig.Signer, sig.Identity, sig.Valid, sig.Reason = res.signer, res.identity, res.valid, res.reason
		v.cache.put(key, sig)
		v.log.DebugContext(ctx, "signature", "repo", repo, "digest", t.digest, "signature", sd, "kind", sig.Kind, "valid", sig.Valid, "reason", sig.Reason)
		e.add(sig)
	}
	return nil
}

// result is the outcome of checking one signature.
type result struct {
	valid bool
	// attestation marks a bundle that verified but holds an attestation.
	attestation bool
	signer      string
	identity    string
	reason      string
}

func invalid(format string, args ...any) result {
	return result{reason: fmt.Sprintf(format, args...)}
}

// aliasesOf returns the other names signatures of repo's content may name.
func (v *Verifier) aliasesOf(repo string) []string {
	if v.aliases == nil {
		return nil
	}
	return v.aliases(repo)
}

// boundTo reports whether a repository named in a signature is repo or one
// of its aliases.
func boundTo(named, repo string, aliases []string) bool {
	return named == repo || slices.Contains(aliases, named)
}
