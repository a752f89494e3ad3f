package config

import (
	"fmt"

	"github.com/portcullis/portcullis/policy"
)

// checkPatterns reports, under key[j], each repository pattern of the list
// that the policy grammar rejects.
func checkPatterns(bad func(key, format string, args ...any), key string, patterns []string) {
	for j, r := range patterns {
		if _, err := policy.ParsePattern(r); err != nil {
			bad(fmt.Sprintf("%s[%d]", key, j), "%v", err)
		}
	}
}

// checkMode reports, under key, a mode other than enforce, quarantine or
// audit.
func checkMode(bad func(key, format string, args ...any), key, mode string) {
	if _, err := policy.ParseMode(mode); err != nil {
		bad(key, "%v", err)
	}
}
