package policy

// Entry is one policy of a Set: the repositories it applies to and its value.
type Entry[T any] struct {
	Patterns Patterns
	Value    T
}

// Set is an ordered list of policies chosen by repository: the first entry
// whose any pattern matches a repository applies. The zero Set is empty and
// applies to no repository. A Set is immutable and safe for concurrent use.
type Set[T any] struct {
	entries []Entry[T]
}

// NewSet returns the set of the entries, in order.
func NewSet[T any](entries ...Entry[T]) Set[T] {
	return Set[T]{entries: append([]Entry[T](nil), entries...)}
}

// First returns the value of the first entry whose any pattern matches
// repo; ok is false (and the value is T's zero value) when none does.
func (s Set[T]) First(repo string) (v T, ok bool) {
	for _, e := range s.entries {
		if e.Patterns.Match(repo) {
			return e.Value, true
		}
	}
	return v, false
}

// Len returns the number of entries.
func (s Set[T]) Len() int { return len(s.entries) }
