package main

import (
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"

	"github.com/portcullis/portcullis/scan"
)

// exitError ends the process with a given code after printing its error
// (when there is one).
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}

func (e exitError) Unwrap() error { return e.err }

// scanCmd: registry scan --archive IMAGE.tar --vulndb DIR [--format json|table] [--fail-on SEVERITY].
// Exit codes: 0 below the threshold, 1 threshold crossed, 2 usage, 3 scan failed.
func scanCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("scan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o scan.ScanOptions
	fs.StringVar(&o.Archive, "archive", "", "docker save / crane pull tarball, or an OCI layout (directory or tar)")
	fs.StringVar(&o.VulnDB, "vulndb", "", "OSV bundle directory (osv/<Ecosystem>/all.zip)")
	fs.StringVar(&o.Format, "format", "table", "json or table")
	fs.StringVar(&o.FailOn, "fail-on", "", "exit 1 when a finding is at least this severe: low, medium, high, critical")
	fs.StringVar(&o.UnknownSeverity, "unknown-severity", "", "how findings without a severity count: low, medium, high, critical (default) or unknown (never)")
	fs.StringVar(&o.CacheDir, "cache-dir", defaultCacheDir(), `where what is learnt of the database is kept for the next scan ("" keeps nothing)`)
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if o.Archive == "" || o.VulnDB == "" {
		return usageError{"scan needs --archive and --vulndb"}
	}
	code, err := scan.Run(ctx, o, stdout)
	if code == scan.ExitOK && err == nil {
		return nil
	}
	return exitError{code: code, err: err}
}

// defaultCacheDir is portcullis under the user's cache directory, or "" when there is none.
func defaultCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "portcullis")
}
