package policy

import "fmt"

// Mode is what a policy does with content that does not pass it.
type Mode string

// The modes of trust.policies[].mode and scan.policies[].mode.
const (
	// ModeEnforce rejects tagging content that does not pass.
	ModeEnforce Mode = "enforce"
	// ModeQuarantine accepts it but withholds pulls until it passes.
	ModeQuarantine Mode = "quarantine"
	// ModeAudit accepts everything and records the outcome.
	ModeAudit Mode = "audit"
)

// ParseMode parses enforce, quarantine or audit. Any other string,
// the empty one included, is an error.
func ParseMode(s string) (Mode, error) {
	m := Mode(s)
	if !m.Valid() {
		return "", fmt.Errorf("must be enforce, quarantine or audit, got %q", s)
	}
	return m, nil
}

// Valid reports whether m is ModeEnforce, ModeQuarantine or ModeAudit.
func (m Mode) Valid() bool {
	switch m {
	case ModeEnforce, ModeQuarantine, ModeAudit:
		return true
	}
	return false
}

// String returns the mode as written in the configuration.
func (m Mode) String() string { return string(m) }

// UnmarshalText parses a mode as ParseMode does and returns its errors.
func (m *Mode) UnmarshalText(text []byte) error {
	v, err := ParseMode(string(text))
	if err != nil {
		return err
	}
	*m = v
	return nil
}
