package auth

import (
	"regexp"
	"sync"
)

// repositoryRE is distribution's repository name grammar (path components
// of lower-case alphanumerics joined by separators).
var repositoryRE = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)
})

// ValidRepository reports whether name is a syntactically valid repository
// name of at most 255 characters.
func ValidRepository(name string) bool {
	return len(name) <= 255 && repositoryRE().MatchString(name)
}
