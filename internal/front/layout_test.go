package front

import (
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestParseDigest: a link's digest is accepted and refused as digest.Parse
// does.
func TestParseDigest(t *testing.T) {
	t.Parallel()
	hex := strings.Repeat("0123456789abcdef", 4)
	for _, s := range []string{
		"sha256:" + hex, "sha256:" + strings.ToUpper(hex), "sha256:" + hex[1:], "sha256:" + hex + "0",
		"sha256:" + hex[:63] + "g", "sha256:" + hex + "\n", "sha512:" + hex + hex, "sha384:" + hex, "", "sha256",
		"md5:" + hex[:32], "sha256-" + hex,
	} {
		want, wantErr := digest.Parse(s)
		got, err := parseLinkDigest(s)
		if got != want || (err == nil) != (wantErr == nil) {
			t.Errorf("parseLinkDigest(%q) = %q, %v; digest.Parse: %q, %v", s, got, err, want, wantErr)
		}
	}
}

// TestAPIVersionKey: the manifest fast path stores the API version header
// under the key Header.Set would.
func TestAPIVersionKey(t *testing.T) {
	t.Parallel()
	if got := http.CanonicalHeaderKey(apiVersionHeader); got != apiVersionKey {
		t.Errorf("CanonicalHeaderKey(%q) = %q, apiVersionKey is %q", apiVersionHeader, got, apiVersionKey)
	}
}
