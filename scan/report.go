package scan

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/portcullis/portcullis/scan/inventory"
	"github.com/portcullis/portcullis/scan/vulndb"
)

// Report is the result of scanning one image.
type Report struct {
	Image    ImageInfo `json:"image"`
	DB       DBInfo    `json:"db"`
	Packages int       `json:"packages"`
	Findings []Finding `json:"findings"`
	// Unchecked counts the packages no record could match, because the database has no
	// archive for their ecosystem or OSV has no ecosystem for their distribution. A report
	// without findings is only as good as this list is empty.
	Unchecked []Unchecked `json:"unchecked,omitempty"`
	// Policy is the result of a severity threshold given to the scan
	// (registry scan --fail-on); absent without one.
	Policy *PolicyResult `json:"policy,omitempty"`
	// RepositoryPolicy is the judgement of the repository's scan policy
	// (scan.policies), in a report the registry stores: as judged when the
	// report was stored; absent when no policy applies.
	RepositoryPolicy *GateSummary `json:"repositoryPolicy,omitempty"`
}

// Unchecked is a group of packages of one ecosystem and package type that were not checked.
type Unchecked struct {
	// Ecosystem is the packages' ecosystem, "" when OSV has none for their distribution
	// (rpm packages of Fedora, CentOS or Amazon Linux).
	Ecosystem string `json:"ecosystem,omitempty"`
	Type      string `json:"type"`
	Packages  int    `json:"packages"`
	Reason    string `json:"reason"`
}

// ImageInfo identifies the scanned image.
type ImageInfo struct {
	// ID is the config digest (what `docker images` shows as IMAGE ID).
	ID string `json:"id"`
	// Digest is the manifest digest, when the source preserved the manifest.
	Digest string `json:"digest,omitempty"`
	// Layers are the DiffIDs of the layers, lowest first.
	Layers []string `json:"layers"`
	// OS is the os-release PRETTY_NAME, Ecosystem the OSV ecosystem of its packages.
	OS        string `json:"os,omitempty"`
	Ecosystem string `json:"ecosystem,omitempty"`
}

// DBInfo identifies the vulnerability database.
type DBInfo struct {
	Digest   string    `json:"digest"`
	Modified time.Time `json:"modified"`
	Records  int       `json:"records"`
}

// PolicyResult is the outcome of a Policy.
type PolicyResult struct {
	Policy
	// Violations counts the findings at or above FailOn; Failed is Violations > 0.
	Violations int  `json:"violations"`
	Failed     bool `json:"failed"`
}

// Scan indexes img (see Index), matches it against db and applies the policy. Errors are
// those of Index, or of reading the image's config.
func Scan(ctx context.Context, img v1.Image, digest string, db *vulndb.DB, policy Policy, opts IndexOptions) (*Report, error) {
	stored, err := NewIndexer(opts).Inventory(ctx, img, digest)
	if err != nil {
		return nil, err
	}
	return stored.Report(db, policy), nil
}

// NewReport matches an image inventory against db and applies the policy. Image.ID, Digest
// and Layers are left for the caller.
func NewReport(inv *inventory.Image, db *vulndb.DB, policy Policy) *Report {
	return newReport(inv, db, policy, Match(inv, db))
}

// newReport is NewReport with the findings already matched.
func newReport(inv *inventory.Image, db *vulndb.DB, policy Policy, findings []Finding) *Report {
	r := &Report{
		DB:       DBInfo{Digest: db.Digest, Modified: db.Modified, Records: db.Records},
		Packages: len(inv.Packages),
		Findings: findings,
		Image:    ImageInfo{Layers: []string{}},
	}
	if inv.OS != nil {
		r.Image.OS, r.Image.Ecosystem = inv.OS.PrettyName, inv.OS.Ecosystem()
	}
	r.Unchecked = unchecked(inv, db)
	if policy.FailOn != "" {
		n := policy.Violations(r.Findings)
		r.Policy = &PolicyResult{Policy: policy, Violations: n, Failed: n > 0}
	}
	return r
}

// unchecked groups the packages of inv that db cannot match, by ecosystem and type.
func unchecked(inv *inventory.Image, db *vulndb.DB) []Unchecked {
	var out []Unchecked
	for _, p := range inv.Packages {
		if db.Covers(p.Ecosystem) {
			continue
		}
		i := slices.IndexFunc(out, func(u Unchecked) bool { return u.Ecosystem == p.Ecosystem && u.Type == p.Type })
		if i < 0 {
			out = append(out, Unchecked{Ecosystem: p.Ecosystem, Type: p.Type, Reason: uncheckedReason(p.Ecosystem, inv.OS, db)})
			i = len(out) - 1
		}
		out[i].Packages++
	}
	slices.SortFunc(out, func(a, b Unchecked) int {
		return cmp.Or(strings.Compare(a.Ecosystem, b.Ecosystem), strings.Compare(a.Type, b.Type))
	})
	return out
}

// uncheckedReason says why db cannot check packages of ecosystem eco on distribution os.
func uncheckedReason(eco string, os *inventory.OSRelease, db *vulndb.DB) string {
	id := "unknown"
	if os != nil && os.ID != "" {
		id = os.ID
	}
	base := vulndb.Base(eco)
	switch {
	case eco == "":
		return fmt.Sprintf("no OSV ecosystem is known for distribution %q", id)
	case !db.CoversBase(eco):
		return "the vulnerability database has no " + base + " records"
	case base == eco:
		return fmt.Sprintf("%s records name a release, and the image's (distribution %q) is not known", base, id)
	}
	return "the vulnerability database has no " + eco + " records"
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report as a table for people.
func (r *Report) WriteTable(w io.Writer) error {
	bw := &errWriter{w: w}
	fmt.Fprintf(bw, "image:    %s\n", r.Image.ID)
	if r.Image.Digest != "" {
		fmt.Fprintf(bw, "digest:   %s\n", r.Image.Digest)
	}
	if r.Image.OS != "" {
		fmt.Fprintf(bw, "os:       %s (%s)\n", r.Image.OS, r.Image.Ecosystem)
	}
	fmt.Fprintf(bw, "database: %s (%d records, modified %s)\n", r.DB.Digest, r.DB.Records, r.DB.Modified.Format(time.RFC3339))
	fmt.Fprintf(bw, "packages: %d, findings: %d\n", r.Packages, len(r.Findings))
	for _, u := range r.Unchecked {
		fmt.Fprintf(bw, "warning:  %d %s packages (%s) not checked: %s\n", u.Packages, u.Type, dash(u.Ecosystem), u.Reason)
	}
	fmt.Fprintln(bw)
	if len(r.Findings) > 0 {
		tw := tabwriter.NewWriter(bw, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEVERITY\tID\tECOSYSTEM\tPACKAGE\tVERSION\tFIXED IN\tSOURCE")
		for _, f := range r.Findings {
			src := ""
			if f.SourcePackage != "" {
				src = f.SourcePackage + " " + f.SourceVersion
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Severity.Level, f.ID, f.Ecosystem, f.Package, f.Version, dash(f.FixedVersion), strings.TrimSpace(src))
		}
		tw.Flush()
		fmt.Fprintln(bw)
	}
	switch {
	case r.Policy == nil:
		fmt.Fprintln(bw, "policy: none")
	case r.Policy.Failed:
		fmt.Fprintf(bw, "policy: FAILED, %d findings at or above %s\n", r.Policy.Violations, r.Policy.FailOn)
	default:
		fmt.Fprintf(bw, "policy: passed, no findings at or above %s\n", r.Policy.FailOn)
	}
	return bw.err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// errWriter keeps the first write error so the table code can stay linear.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}
