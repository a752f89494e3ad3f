package admission

import (
	"bufio"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/opencontainers/go-digest"

	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/trust"
)

// fakeVerifier enforces one policy and answers every digest with verdict.
type fakeVerifier struct {
	verdict trust.Verdict
}

func (f fakeVerifier) Policy(string) (string, string, policy.Mode, bool) {
	return "prod", "v1", policy.ModeEnforce, true
}

func (f fakeVerifier) VerifyWithParents(_ context.Context, repo string, d digest.Digest, _ []digest.Digest) (trust.Verdict, error) {
	v := f.verdict
	v.Repository, v.Digest, v.Policy, v.Mode = repo, d, "prod", policy.ModeEnforce
	return v, nil
}

type noParents struct{}

func (noParents) Parents(context.Context, string, digest.Digest) ([]digest.Digest, error) {
	return nil, nil
}

// TestEnforceMessage: a refused tag push tells the commands that work
// offline, and how to carry signatures along when the image may have been
// copied without them.
func TestEnforceMessage(t *testing.T) {
	t.Parallel()
	const copyHint = "if you copied the image from another repository (cosign copy, crane copy), copy its signatures too " +
		"(cosign copy copies them; crane copy does not) or sign it here"
	ref := "registry.example.com/team/app@" + pushDigest.String()
	tests := []struct {
		name     string
		verdict  trust.Verdict
		wantHint bool
	}{
		{"no signature", trust.Verdict{Reason: "no signature"}, true},
		{"bound to another repository", trust.Verdict{Signed: true, Reason: "no valid signature", Signatures: []trust.Signature{
			{Kind: trust.KindCosignBundle, Reason: `signature is bound to repository "team/build", not "team/app"`}}}, true},
		{"legacy signature of another repository", trust.Verdict{Signed: true, Reason: "no valid signature", Signatures: []trust.Signature{
			{Kind: trust.KindCosignLegacy, Reason: `signature is for repository "registry.example.com/team/build", not "team/app"`}}}, true},
		{"signed by an unknown key", trust.Verdict{Signed: true, Reason: "no valid signature", Signatures: []trust.Signature{
			{Kind: trust.KindCosignBundle, Reason: "no trusted key verifies the signature"}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := newGate(t, nil)
			g.verifier, g.parents = fakeVerifier{verdict: tt.verdict}, noParents{}
			err := g.AdmitTag(context.Background(), tagPush())
			var ec errcode.Error
			if !errors.As(err, &ec) || ec.Code != errcode.ErrorCodeDenied {
				t.Fatalf("AdmitTag: %v, want DENIED", err)
			}
			for _, want := range []string{
				"push by digest (crane push IMAGE " + ref + ")",
				"cosign sign --key KEY --tlog-upload=false --use-signing-config=false " + ref,
				"notation sign --key NAME " + ref,
				"then tag it (crane tag " + ref + " v1)",
			} {
				if !strings.Contains(ec.Message, want) {
					t.Errorf("message %q lacks %q", ec.Message, want)
				}
			}
			if got := strings.HasSuffix(ec.Message, "; "+copyHint); got != tt.wantHint {
				t.Errorf("message %q: copy hint %v, want %v", ec.Message, got, tt.wantHint)
			}
		})
	}
}

// TestDocumentedSigningCommands: every cosign signing command the README
// and the example configuration show works offline, as the refusal's does.
func TestDocumentedSigningCommands(t *testing.T) {
	t.Parallel()
	for _, file := range []string{"../../README.md", "../../config.example.yml", "../../trust/example.yml"} {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		n, found := 0, 0
		for sc.Scan() {
			n++
			line := sc.Text()
			if !strings.Contains(line, "cosign sign ") {
				continue
			}
			found++
			if !strings.Contains(line, "--tlog-upload=false") || !strings.Contains(line, "--use-signing-config=false") {
				t.Errorf("%s:%d: a cosign signing command that needs the network: %s", file, n, strings.TrimSpace(line))
			}
		}
		_ = f.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		if found == 0 {
			t.Errorf("%s shows no cosign signing command", file)
		}
	}
}
