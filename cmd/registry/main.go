// Command registry is the Portcullis container registry.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	var ue usageError
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		if ee.err != nil {
			fmt.Fprintln(os.Stderr, "registry:", ee.err)
		}
		os.Exit(ee.code)
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, "registry:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "registry:", err)
		os.Exit(1)
	}
}

// usageError is a command-line mistake; it exits 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

const usage = `usage:
  registry serve [--config FILE] [--addr HOST:PORT] [--data DIR] [--token-only]
  registry config validate [--skip-files] FILE
  registry auth keygen FILE
  registry auth hash [--cost 12] < PASSWORD
  registry auth tokens list [--user USER] [--config FILE] [--data DIR]
  registry auth tokens revoke ID|--user USER|--all [--config FILE] [--data DIR]
  registry robot create NAME --repo PATTERN --action ACTION [--expires 720h] [--config FILE] [--data DIR]
  registry robot list|revoke [NAME] [--config FILE] [--data DIR]
  registry policy explain --subject user:NAME|robot:NAME|anonymous --scope repository:NAME:ACTIONS|registry:catalog:*|registry:admin:* [--config FILE] [--data DIR]
  registry vulndb import DIR [--config FILE] [--data DIR]
  registry gc [--dry-run] [--json] [--config FILE] [--data DIR]
  registry replicate status|run RULE [--url URL] [--username USER --password-file FILE] [--json]
  registry scan --archive IMAGE.tar --vulndb DIR [--format json|table] [--fail-on SEVERITY] [--cache-dir DIR]
  registry version`

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return usageError{"no command given"}
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "config":
		if len(args) < 2 || args[1] != "validate" {
			fmt.Fprintln(stderr, usage)
			return usageError{"config: expected \"validate FILE\""}
		}
		return validateConfig(args[2:], stdout)
	case "auth":
		return authCmd(ctx, args[1:], stdin, stdout, stderr)
	case "robot":
		return robotCmd(ctx, args[1:], stdout, stderr)
	case "policy":
		return policyCmd(ctx, args[1:], stdout, stderr)
	case "vulndb":
		return vulndbCmd(ctx, args[1:], stdout, stderr)
	case "scan":
		return scanCmd(ctx, args[1:], stdout, stderr)
	case "gc":
		return gcCmd(ctx, args[1:], stdout, stderr)
	case "replicate":
		return replicateCmd(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, versionString())
		return nil
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	fmt.Fprintln(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", args[0])}
}
