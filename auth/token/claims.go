package token

import (
	"github.com/golang-jwt/jwt/v5"
)

// ResourceActions is one entry of the access claim: the actions granted on
// a typed, named resource.
type ResourceActions struct {
	Type    string   `json:"type"`
	Class   string   `json:"class,omitempty"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// Claims is the claim set of our tokens: the registered claims (iss, sub,
// aud, exp, nbf, iat, jti), the specification's access claim, and our own
// claims describing the subject.
type Claims struct {
	jwt.RegisteredClaims
	Access []ResourceActions `json:"access"`
	// Kind is user, robot or anonymous.
	Kind string `json:"pcs_kind,omitempty"`
	// Groups are the user's groups when the token was issued.
	Groups []string `json:"pcs_groups,omitempty"`
	// Use is "refresh" for a refresh token, empty for an access token. The
	// access controller accepts only access tokens.
	Use string `json:"pcs_use,omitempty"`
	// Credential fingerprints the password hash or robot secret a refresh
	// token was issued for, so changing either revokes it.
	Credential string `json:"pcs_cred,omitempty"`
}

const useRefresh = "refresh"

// allows reports whether the access claim grants action on the resource.
func (c *Claims) allows(typ, name, action string) bool {
	for i := range c.Access {
		ra := &c.Access[i]
		if ra.Type != typ || ra.Name != name {
			continue
		}
		for _, a := range ra.Actions {
			if a == action {
				return true
			}
		}
	}
	return false
}
