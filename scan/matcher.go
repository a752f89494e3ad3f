package scan

import (
	"sync"

	"github.com/portcullis/portcullis/scan/inventory"
	"github.com/portcullis/portcullis/scan/vulndb"
)

// Matcher matches inventories against one database and remembers, for each package version
// it has looked up, the records that affect it: images that share packages (a common base
// image) are range-checked once. Use one Matcher per database, for instance to re-match every
// stored inventory after an import, and drop it with the database; its memory grows with the
// number of distinct package versions it has seen. It is safe for concurrent use.
type Matcher struct {
	db *vulndb.DB

	mu   sync.RWMutex
	memo map[memoKey][]hit
}

type memoKey struct{ eco, name, version string }

// NewMatcher returns a Matcher for db.
func NewMatcher(db *vulndb.DB) *Matcher {
	return &Matcher{db: db, memo: make(map[memoKey][]hit)}
}

// DB returns the Matcher's database.
func (m *Matcher) DB() *vulndb.DB { return m.db }

// Match is the package-level Match against the Matcher's database.
func (m *Matcher) Match(img *inventory.Image) []Finding {
	return matchWith(img, m.lookup)
}

func (m *Matcher) lookup(eco, name, version string) []hit {
	k := memoKey{eco, name, version}
	m.mu.RLock()
	hits, ok := m.memo[k]
	m.mu.RUnlock()
	if ok {
		return hits
	}
	hits = lookupHits(m.db, eco, name, version)
	m.mu.Lock()
	m.memo[k] = hits
	m.mu.Unlock()
	return hits
}

// Report is StoredInventory.Report through the Matcher.
func (m *Matcher) Report(stored *StoredInventory, policy Policy) *Report {
	return stored.report(m.db, policy, m.Match(stored.Inventory))
}

// Rematch is the package-level Rematch through the Matcher.
func (m *Matcher) Rematch(stored *StoredInventory, prev *Report, policy Policy) (*Report, Change) {
	return diffReports(m.Report(stored, policy), prev)
}
