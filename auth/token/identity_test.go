package token

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/bcrypt"

	"github.com/portcullis/portcullis/config"
)

// TestDummyCost checks that an unknown user is compared against a hash as
// costly as the most costly known one, whichever order the users come in.
func TestDummyCost(t *testing.T) {
	t.Parallel()
	hash := func(cost int) []byte {
		h, err := bcrypt.GenerateFromPassword([]byte("pw"), cost)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	cheap := hash(bcrypt.MinCost)
	hashes := map[string][]byte{"strong": hash(bcrypt.MinCost + 2)}
	for i := range 20 {
		hashes[fmt.Sprintf("user%02d", i)] = cheap
	}
	u, err := NewUsers(hashes)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := bcrypt.Cost(u.dummy); err != nil || c != bcrypt.MinCost+2 {
		t.Errorf("dummy hash cost %d (%v), want the highest configured, %d", c, err, bcrypt.MinCost+2)
	}
	if got := len(u.Weak()); got != 21 {
		t.Errorf("%d weak users, want 21", got)
	}
	if diff := cmp.Diff([]WeakUser{{Name: "strong", Cost: bcrypt.MinCost + 2}, {Name: "user00", Cost: bcrypt.MinCost}}, u.Weak()[:2]); diff != "" {
		t.Errorf("weak users (-want +got):\n%s", diff)
	}
	// Without users, the dummy still costs the default.
	if u, err := NewUsers(nil); err != nil {
		t.Fatal(err)
	} else if c, _ := bcrypt.Cost(u.dummy); c != bcrypt.DefaultCost || len(u.Weak()) != 0 {
		t.Errorf("no users: dummy cost %d, %d weak", c, len(u.Weak()))
	}
}

// TestPasswordFileFingerprint: a user whose password comes from a file has
// the same credential fingerprint in every process that reads the file
// (replicas, restarts), though each hashes it with its own bcrypt salt, so
// a refresh token issued by one process is accepted by the others; a new
// password changes it.
func TestPasswordFileFingerprint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "alice")
	if err := os.WriteFile(file, []byte("alice-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Auth{Users: []config.AuthUser{{Name: "alice", PasswordFile: file}, {Name: "bob", PasswordFile: file}}}
	load := func() *Users {
		t.Helper()
		u, err := LoadUsers(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	one, two := load(), load()
	c1, _ := one.credential("alice")
	c2, _ := two.credential("alice")
	if c1 == "" || c1 != c2 {
		t.Errorf("two loads of one password file: fingerprints %q and %q", c1, c2)
	}
	if got, err := two.Authenticate("alice", "alice-pw"); err != nil || got != c1 {
		t.Errorf("Authenticate: %q, %v; want %q", got, err, c1)
	}
	if b, _ := one.credential("bob"); b == c1 {
		t.Error("two users with one password share a fingerprint")
	}
	if err := os.WriteFile(file, []byte("new-pw"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c3, _ := load().credential("alice"); c3 == c1 {
		t.Error("a new password keeps the fingerprint: refresh tokens would outlive it")
	}
}
