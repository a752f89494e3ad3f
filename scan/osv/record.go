// Package osv holds the parts of the OSV schema (https://ossf.github.io/osv-schema/) that a
// scanner needs: parsing and validating one record, deciding whether a version is affected,
// and rating a record's severity.
//
// It keeps only the fields that matching and reporting use, so a database of many records
// stays small in memory. It does no I/O and must not import the scan, vulndb or inventory
// packages.
package osv

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// MaxRecordBytes is the largest record Parse accepts.
const MaxRecordBytes = 16 << 20

// Range types of affected[].ranges[].type.
const (
	RangeEcosystem = "ECOSYSTEM"
	RangeSemver    = "SEMVER"
	RangeGit       = "GIT"
)

// Record is one OSV vulnerability record, reduced to what a scanner uses.
type Record struct {
	ID               string           `json:"id"`
	Modified         time.Time        `json:"modified"`
	Withdrawn        *time.Time       `json:"withdrawn,omitempty"`
	Aliases          []string         `json:"aliases,omitempty"`
	Upstream         []string         `json:"upstream,omitempty"`
	Summary          string           `json:"summary,omitempty"`
	Affected         []Affected       `json:"affected,omitempty"`
	Severity         []Severity       `json:"severity,omitempty"`
	DatabaseSpecific DatabaseSpecific `json:"database_specific,omitzero"`
}

// Affected is one entry of a record's affected list.
type Affected struct {
	Package  Package  `json:"package"`
	Ranges   []Range  `json:"ranges,omitempty"`
	Versions []string `json:"versions,omitempty"`
}

// Package names the package an Affected entry is about.
type Package struct {
	Ecosystem string `json:"ecosystem"`
	Name      string `json:"name"`
}

// Range is a version range. Events are kept in the order the record gives them.
type Range struct {
	Type   string  `json:"type"`
	Events []Event `json:"events"`
}

// Event is one event of a range; exactly one of its fields is set.
type Event struct {
	Introduced   string `json:"introduced,omitempty"`
	Fixed        string `json:"fixed,omitempty"`
	LastAffected string `json:"last_affected,omitempty"`
	Limit        string `json:"limit,omitempty"`
}

// Severity is one entry of a record's severity list: a CVSS vector and its type.
type Severity struct {
	Type  string `json:"type"`
	Score string `json:"score"`
}

// DatabaseSpecific holds the one database_specific field we read.
type DatabaseSpecific struct {
	Severity string `json:"severity,omitempty"`
}

// ErrInvalidRecord is returned (wrapped, with the reason) by Parse when a record is not valid
// JSON or breaks the schema rules Validate checks.
var ErrInvalidRecord = errors.New("invalid OSV record")

// Parse decodes and validates one record. Errors wrap ErrInvalidRecord.
func Parse(data []byte) (*Record, error) {
	if len(data) > MaxRecordBytes {
		return nil, fmt.Errorf("%w: %d bytes, over the limit of %d", ErrInvalidRecord, len(data), MaxRecordBytes)
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRecord, err)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// Validate checks the rules a scanner relies on: an id, a modified time, and for every
// affected entry a package with ecosystem and name, ranges of a known type whose events set
// exactly one field each, and at least one introduced event in every ECOSYSTEM or SEMVER
// range. Errors wrap ErrInvalidRecord and name the offending field.
func (r *Record) Validate() error {
	fail := func(format string, args ...any) error {
		id := r.ID
		if id == "" {
			id = "(no id)"
		}
		return fmt.Errorf("%w %s: %s", ErrInvalidRecord, id, fmt.Sprintf(format, args...))
	}
	if strings.TrimSpace(r.ID) == "" {
		return fail("id: required")
	}
	if r.Modified.IsZero() {
		return fail("modified: required")
	}
	for i, a := range r.Affected {
		if a.Package.Ecosystem == "" || a.Package.Name == "" {
			// The schema allows an affected entry without a package (GIT-only records);
			// such entries never match an installed package, but they must say nothing else.
			if a.Package != (Package{}) {
				return fail("affected[%d].package: ecosystem and name are both required", i)
			}
		}
		for j, rg := range a.Ranges {
			switch rg.Type {
			case RangeEcosystem, RangeSemver, RangeGit:
			default:
				return fail("affected[%d].ranges[%d].type: unknown type %q", i, j, rg.Type)
			}
			if len(rg.Events) == 0 {
				return fail("affected[%d].ranges[%d].events: required", i, j)
			}
			introduced := false
			for k, e := range rg.Events {
				n := 0
				for _, v := range []string{e.Introduced, e.Fixed, e.LastAffected, e.Limit} {
					if v != "" {
						n++
					}
				}
				if n != 1 {
					return fail("affected[%d].ranges[%d].events[%d]: exactly one of introduced, fixed, last_affected, limit must be set", i, j, k)
				}
				if e.Introduced != "" {
					introduced = true
				}
			}
			if !introduced && rg.Type != RangeGit {
				return fail("affected[%d].ranges[%d]: no introduced event", i, j)
			}
		}
	}
	for i, s := range r.Severity {
		if s.Type == "" || s.Score == "" {
			return fail("severity[%d]: type and score are both required", i)
		}
	}
	return nil
}
