package trust

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// simpleSigningType is critical.type of a cosign simple-signing payload.
const simpleSigningType = "cosign container image signature"

// SimpleSigning is the payload cosign signs in its legacy layout (the
// Red Hat "simple signing" format). Only the critical section binds.
type SimpleSigning struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// ParseSimpleSigning decodes a simple-signing payload strictly enough for
// verification: it must be one JSON object of the cosign type, naming a
// valid manifest digest. It returns an error describing the first problem.
func ParseSimpleSigning(payload []byte) (*SimpleSigning, error) {
	var s SimpleSigning
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("simple-signing payload: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("simple-signing payload: trailing data")
	}
	if s.Critical.Type != simpleSigningType {
		return nil, fmt.Errorf("simple-signing payload: type %q, want %q", s.Critical.Type, simpleSigningType)
	}
	if _, err := digest.Parse(s.Critical.Image.DockerManifestDigest); err != nil {
		return nil, fmt.Errorf("simple-signing payload: docker-manifest-digest: %w", err)
	}
	return &s, nil
}

// verifyLegacy checks one legacy layer: the signature in its annotation
// over the payload by a trusted key, then what the payload binds.
// aliases are other names the repository's content may be signed under
// (a pull-through cache's repository: the remote's name for it).
func verifyLegacy(r *rule, repo string, aliases []string, t targetInfo, payload []byte, b64 string, annotations map[string]string) result {
	if r.requireTlog {
		return invalid("the policy requires a transparency log entry, which legacy signatures are not checked for; use cosign's bundle format")
	}
	if _, ok := annotations["dev.sigstore.cosign/certificate"]; ok {
		return invalid("certificate-signed (keyless) cosign signatures are not supported")
	}
	sig, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return invalid("signature annotation is not base64: %v", err)
	}
	signer := verifyWithKeys(r.keys, sig, payload)
	if signer == nil {
		if len(r.keys) == 0 {
			return invalid("the policy trusts no cosign key")
		}
		return invalid("not signed by a trusted key (%s)", keyNames(r.keys))
	}
	res := result{signer: signer.name, identity: signer.id}
	ss, err := ParseSimpleSigning(payload)
	if err != nil {
		res.reason = err.Error()
		return res
	}
	if got := ss.Critical.Image.DockerManifestDigest; got != t.digest.String() {
		res.reason = fmt.Sprintf("signature is for %s, not %s", got, t.digest)
		return res
	}
	named := sameRepository(ss.Critical.Identity.DockerReference, repo)
	for _, a := range aliases {
		named = named || sameRepository(ss.Critical.Identity.DockerReference, a)
	}
	if !named {
		res.reason = fmt.Sprintf("signature is for repository %q, not %q", ss.Critical.Identity.DockerReference, repo)
		return res
	}
	res.valid = true
	res.reason = "verified with key " + signer.name
	return res
}

// verifyWithKeys returns the first key whose verifiers accept sig over
// payload, or nil.
func verifyWithKeys(keys []*keySigner, sig, payload []byte) *keySigner {
	for _, k := range keys {
		for _, v := range k.verifiers {
			if v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(payload)) == nil {
				return k
			}
		}
	}
	return nil
}

func keyNames(keys []*keySigner) string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.name
	}
	return strings.Join(names, ", ")
}

// sameRepository reports whether a signed image reference names repo. The
// registry host in the reference is what the signer used to reach us (it
// varies with DNS names and ports), so only the repository path is
// compared; tags and digests in the reference are ignored.
func sameRepository(ref, repo string) bool {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndexByte(ref, ':'); i >= 0 && !strings.Contains(ref[i:], "/") {
		ref = ref[:i]
	}
	// The first component is a registry host when it looks like one
	// (as in distribution/reference): it has a dot or a port, or is localhost.
	if i := strings.IndexByte(ref, '/'); i >= 0 {
		first := ref[:i]
		if strings.ContainsAny(first, ".:") || first == "localhost" || strings.ToLower(first) != first {
			ref = ref[i+1:]
		}
	}
	return ref != "" && ref == repo
}
