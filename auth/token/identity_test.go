package token

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/bcrypt"
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
