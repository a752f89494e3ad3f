package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/portcullis/portcullis/auth/token"
	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/app"
)

// loadConfig reads --config, or the defaults.
func loadConfig(file string) (*config.Config, error) {
	if file == "" {
		return config.Default(), nil
	}
	return config.LoadFile(file)
}

// authCmd: registry auth keygen FILE | hash [--cost N] | tokens list|revoke.
func authCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "hash" {
		return hashCmd(args[1:], stdin, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "tokens" {
		return tokensCmd(ctx, args[1:], stdout, stderr)
	}
	if len(args) != 2 || args[0] != "keygen" {
		return usageError{"auth: expected \"keygen FILE\", \"hash [--cost N]\" or \"tokens list|revoke\""}
	}
	if err := token.GenerateKeyFile(args[1]); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote a P-256 signing key to %s; set auth.token.signingKeyFile to it\n", args[1])
	return nil
}

// hashCmd: registry auth hash [--cost N] reads a password (the first line
// of stdin) and prints its bcrypt hash, for auth.users[].passwordHash or an
// htpasswd file.
func hashCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("auth hash", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cost := fs.Int("cost", 12, fmt.Sprintf("bcrypt cost, %d to %d (below %d is weak)", bcrypt.MinCost, bcrypt.MaxCost, token.WeakCost))
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{"auth hash reads the password from stdin, not from its arguments"}
	}
	if *cost < bcrypt.MinCost || *cost > bcrypt.MaxCost {
		return usageError{fmt.Sprintf("auth hash: --cost must be between %d and %d", bcrypt.MinCost, bcrypt.MaxCost)}
	}
	if *cost < token.WeakCost {
		fmt.Fprintf(stderr, "warning: cost %d is weak; the server warns about hashes below cost %d\n", *cost, token.WeakCost)
	}
	line, err := bufio.NewReader(io.LimitReader(stdin, 1<<10)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read password: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" || len(pw) > 72 {
		return errors.New("auth hash: the password on stdin must be 1 to 72 bytes")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), *cost)
	if err != nil {
		return fmt.Errorf("hash password: %w", err)
	}
	fmt.Fprintln(stdout, string(h))
	return nil
}

// tokensCmd: registry auth tokens list [--user U] | revoke ID|--user U|--all.
func tokensCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"auth tokens: expected list or revoke"}
	}
	fs := flag.NewFlagSet("auth tokens "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "configuration file")
	data := fs.String("data", "", "data directory, overrides dataDir (where filesystem storage keeps token records)")
	user := fs.String("user", "", "only this user's tokens (robot+NAME for a robot)")
	all := fs.Bool("all", false, "revoke every refresh token")
	sub, rest := args[0], args[1:]
	// The token id comes first: registry auth tokens revoke ID.
	var id string
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		id, rest = rest[0], rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("auth tokens %s: unexpected argument %q", sub, fs.Arg(0))}
	}
	switch sub {
	case "list":
		if id != "" || *all {
			return usageError{"auth tokens list [--user USER]"}
		}
	case "revoke":
		set := 0
		for _, on := range []bool{id != "", *user != "", *all} {
			if on {
				set++
			}
		}
		if set != 1 {
			return usageError{"auth tokens revoke ID|--user USER|--all"}
		}
	default:
		return usageError{fmt.Sprintf("auth tokens: unknown command %q", sub)}
	}
	cfg, err := loadConfig(*file)
	if err != nil {
		return err
	}
	if *data != "" {
		cfg.DataDir = *data
	}
	refreshes, err := app.OpenRefreshes(ctx, cfg)
	if err != nil {
		return err
	}
	if sub == "list" {
		list, err := refreshes.List(ctx, *user)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tUSER\tISSUED\tEXPIRES")
		for _, r := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.ID, r.Subject, r.IssuedAt.Format(time.RFC3339), r.ExpiresAt.Format(time.RFC3339))
		}
		return tw.Flush()
	}
	if id != "" {
		if err := refreshes.Revoke(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked refresh token %s\n", id)
		return nil
	}
	n, err := refreshes.RevokeSubject(ctx, *user) // *user is empty for --all
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "revoked %d refresh tokens\n", n)
	return nil
}

// robotCmd: registry robot create|list|revoke.
func robotCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"robot: expected create, list or revoke"}
	}
	fs := flag.NewFlagSet("robot "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "configuration file")
	data := fs.String("data", "", "data directory, overrides dataDir (where filesystem storage keeps robots)")
	var repos, actions multiFlag
	fs.Var(&repos, "repo", "repository pattern the robot may act on (repeatable)")
	fs.Var(&actions, "action", "action: pull, push or delete (repeatable, or comma-separated)")
	expires := fs.Duration("expires", 0, "lifetime, e.g. 720h; 0 means no expiry")
	desc := fs.String("description", "", "what the robot is for")
	sub, rest := args[0], args[1:]
	// The robot's name comes first: registry robot create NAME --repo ...
	var name string
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		name, rest = rest[0], rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		return usageError{err.Error()}
	}
	cfg, err := loadConfig(*file)
	if err != nil {
		return err
	}
	if *data != "" {
		cfg.DataDir = *data
	}
	robots, err := app.OpenRobots(ctx, cfg)
	if err != nil {
		return err
	}
	switch sub {
	case "create":
		if name == "" || len(repos) == 0 || len(actions) == 0 {
			return usageError{"robot create NAME --repo PATTERN --action ACTION [--expires DURATION]"}
		}
		var acts []string
		for _, a := range actions {
			acts = append(acts, strings.Split(a, ",")...)
		}
		r, secret, err := robots.Create(ctx, token.RobotSpec{
			Name: name, Description: *desc, Lifetime: *expires, CreatedBy: "cli",
			Access: []token.RobotGrant{{Repositories: repos, Actions: acts}},
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "login:  robot+%s\nsecret: %s\n", r.Name, secret)
		if !r.ExpiresAt.IsZero() {
			fmt.Fprintf(stdout, "expires: %s\n", r.ExpiresAt.Format(time.RFC3339))
		}
		fmt.Fprintln(stderr, "The secret is shown once; store it now.")
		return nil
	case "list":
		list, err := robots.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tACCESS\tEXPIRES")
		for _, r := range list {
			var acc []string
			for _, g := range r.Access {
				acc = append(acc, strings.Join(g.Repositories, ",")+":"+strings.Join(g.Actions, ","))
			}
			exp := "never"
			if !r.ExpiresAt.IsZero() {
				exp = r.ExpiresAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, strings.Join(acc, " "), exp)
		}
		return tw.Flush()
	case "revoke":
		if name == "" {
			return usageError{"robot revoke NAME"}
		}
		if err := robots.Revoke(ctx, name); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked robot+%s\n", name)
		return nil
	}
	return usageError{fmt.Sprintf("robot: unknown command %q", sub)}
}

// policyCmd: registry policy explain --subject S --scope SCOPE.
func policyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "explain" {
		return usageError{"policy: expected \"explain --subject SUBJECT --scope SCOPE [--config FILE] [--data DIR]\""}
	}
	fs := flag.NewFlagSet("policy explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "configuration file")
	data := fs.String("data", "", "data directory, overrides dataDir (where filesystem storage keeps robots, for robot:NAME)")
	subject := fs.String("subject", "", "user:NAME, robot:NAME or anonymous")
	scope := fs.String("scope", "", "repository:NAME:ACTIONS (e.g. repository:team/app:push), registry:catalog:* or registry:admin:*")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{err.Error()}
	}
	if *subject == "" || *scope == "" {
		return usageError{"policy explain needs --subject and --scope"}
	}
	cfg, err := loadConfig(*file)
	if err != nil {
		return err
	}
	if *data != "" {
		cfg.DataDir = *data
	}
	out, allowed, err := app.ExplainAccess(ctx, cfg, *subject, *scope)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, strings.TrimRight(out, "\n"))
	if !allowed {
		// Scripts can test the answer: exit 1 when an action is denied.
		return exitError{code: 1}
	}
	return nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// vulndbCmd: registry vulndb import DIR [--config FILE] [--data DIR].
func vulndbCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) < 2 || args[0] != "import" {
		return usageError{"vulndb: expected \"import DIR\""}
	}
	dir := args[1]
	fs := flag.NewFlagSet("vulndb import", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "configuration file (where the registry stores content)")
	data := fs.String("data", "", "data directory, overrides dataDir")
	if err := fs.Parse(args[2:]); err != nil {
		return usageError{err.Error()}
	}
	cfg, err := loadConfig(*file)
	if err != nil {
		return err
	}
	if *data != "" {
		cfg.DataDir = *data
	}
	d, info, err := app.ImportVulnDB(ctx, cfg, dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "imported %s as portcullis/vulndb:latest (%s), database version %s\n", dir, d, info.Digest)
	for _, e := range info.Ecosystems {
		fmt.Fprintf(stdout, "  %-10s %6d records\n", e.Name, e.Records)
	}
	return nil
}
