package scan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/portcullis/portcullis/scan/inventory"
	"github.com/portcullis/portcullis/scan/osv"
	"github.com/portcullis/portcullis/scan/vulndb"
)

// Exit codes of Run.
const (
	// ExitOK: the scan ran and no finding is at or above the policy threshold.
	ExitOK = 0
	// ExitPolicy: the scan ran and at least one finding is at or above the threshold.
	ExitPolicy = 1
	// ExitUsage: the options are invalid (ErrUsage); nothing was scanned.
	ExitUsage = 2
	// ExitFailed: the scan could not be done (a FailedError: unreadable archive or database,
	// a limit crossed, a malformed package database); nothing was written to stdout.
	ExitFailed = 3
)

// ErrUsage is returned by Run, wrapped with the reason, for invalid options.
var ErrUsage = errors.New("invalid scan options")

// FailedError is returned by Run when the image or the database could not be scanned.
type FailedError struct{ Err error }

func (e *FailedError) Error() string { return "scan failed: " + e.Err.Error() }
func (e *FailedError) Unwrap() error { return e.Err }

// ScanOptions are the options of Run, the `registry scan` command.
type ScanOptions struct {
	// Archive is a docker save / crane pull tarball, an OCI layout directory or a tar of one.
	Archive string
	// VulnDB is the OSV bundle directory (see vulndb.Open: only the archives of the
	// image's ecosystems are read).
	VulnDB string
	// Format is "table" (the default when "") or "json".
	Format string
	// FailOn is the lowest severity that fails the scan: low, medium, high, critical; ""
	// never fails.
	FailOn string
	// UnknownSeverity is what a finding without a severity counts as: low, medium, high,
	// critical (the default when ""), or unknown to never count it.
	UnknownSeverity string
	// CacheDir keeps what is learnt of the database's archives for the next run (their
	// digests, and which records name which packages); "" keeps nothing.
	CacheDir string
	// Limits bound what is read from each layer; TempDir (also used for unpacking an OCI
	// layout tar) defaults to os.TempDir().
	Limits inventory.Options
}

// Run scans the archive against the database, writes the report to stdout in the chosen
// format and returns the exit code: ExitOK, ExitPolicy, or with an error ExitUsage (ErrUsage)
// or ExitFailed (*FailedError, whose message starts with "scan failed: ").
func Run(ctx context.Context, opts ScanOptions, stdout io.Writer) (int, error) {
	policy, err := opts.policy()
	if err != nil {
		return ExitUsage, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	format := strings.ToLower(opts.Format)
	if format == "" {
		format = "table"
	}
	if format != "table" && format != "json" {
		return ExitUsage, fmt.Errorf("%w: format %q: want json or table", ErrUsage, opts.Format)
	}
	if opts.Archive == "" || opts.VulnDB == "" {
		return ExitUsage, fmt.Errorf("%w: an archive and a vulnerability database are both required", ErrUsage)
	}

	// The database's index is read while the layers are read; then only the archives of
	// the image's ecosystems are loaded, and only the records of its packages decoded. A
	// failure of either stops the other.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type loaded struct {
		db  *vulndb.DB
		err error
	}
	dbc := make(chan loaded, 1)
	go func() {
		db, err := vulndb.Open(ctx, opts.VulnDB, vulndb.Options{CacheDir: opts.CacheDir})
		if err != nil {
			cancel()
		}
		dbc <- loaded{db, err}
	}()
	stored, scanErr := indexArchive(ctx, opts)
	if scanErr != nil {
		cancel()
	}
	l := <-dbc
	if l.err != nil && !(scanErr != nil && errors.Is(l.err, context.Canceled)) {
		return ExitFailed, &FailedError{fmt.Errorf("load vulnerability database: %w", l.err)}
	}
	if scanErr != nil {
		return ExitFailed, &FailedError{scanErr}
	}
	if err := l.db.Need(ctx, needed(stored.Inventory)); err != nil {
		return ExitFailed, &FailedError{fmt.Errorf("load vulnerability database: %w", err)}
	}
	report := stored.Report(l.db, policy)
	if format == "json" {
		err = report.WriteJSON(stdout)
	} else {
		err = report.WriteTable(stdout)
	}
	if err != nil {
		return ExitFailed, &FailedError{fmt.Errorf("write report: %w", err)}
	}
	if report.Policy != nil && report.Policy.Failed {
		return ExitPolicy, nil
	}
	return ExitOK, nil
}

// indexArchive indexes the image of the archive opts names.
func indexArchive(ctx context.Context, opts ScanOptions) (*StoredInventory, error) {
	ar, err := OpenArchive(ctx, opts.Archive, opts.Limits.TempDir)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", opts.Archive, err)
	}
	defer ar.Close()
	return NewIndexer(IndexOptions{Limits: opts.Limits}).Inventory(ctx, ar.Image, ar.Digest)
}

func (o ScanOptions) policy() (Policy, error) {
	var p Policy
	if o.FailOn != "" {
		l, ok := osv.ParseLevel(o.FailOn)
		if !ok || l == osv.Unknown {
			return p, fmt.Errorf("fail-on %q: want low, medium, high or critical", o.FailOn)
		}
		p.FailOn = l
	}
	if o.UnknownSeverity != "" {
		l, ok := osv.ParseLevel(o.UnknownSeverity)
		if !ok {
			return p, fmt.Errorf("unknown-severity %q: want low, medium, high, critical or unknown", o.UnknownSeverity)
		}
		p.UnknownAs = l
	}
	return p, p.Validate()
}
