package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/portcullis/portcullis/auth/token"
	"github.com/portcullis/portcullis/config"
)

func TestAuthHash(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		cost int
	}{{nil, 12}, {[]string{"--cost", "10"}, 10}} {
		var out, errOut bytes.Buffer
		args := append([]string{"auth", "hash"}, tt.args...)
		if err := run(context.Background(), args, strings.NewReader("s3cret\n"), &out, &errOut); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		h := bytes.TrimSpace(out.Bytes())
		if c, err := bcrypt.Cost(h); err != nil || c != tt.cost {
			t.Errorf("%v: cost %d (%v), want %d", args, c, err, tt.cost)
		}
		if err := bcrypt.CompareHashAndPassword(h, []byte("s3cret")); err != nil {
			t.Errorf("%v: hash does not match the password: %v", args, err)
		}
	}
	if err := run(context.Background(), []string{"auth", "hash"}, strings.NewReader(""), new(bytes.Buffer), new(bytes.Buffer)); err == nil {
		t.Error("empty password hashed")
	}
}

func TestAuthTokens(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := filepath.Join(dir, "key.pem")
	if err := token.GenerateKeyFile(key); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "config.yml")
	data := filepath.Join(dir, "data")
	if err := os.WriteFile(cfgFile, []byte("version: 1\ndataDir: "+data+"\nauth:\n  enabled: true\n  token:\n    signingKeyFile: "+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadFile(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	// Records as the token service writes them.
	records := filepath.Join(cfg.FilesystemRoot(), "portcullis", "tokens")
	if err := os.MkdirAll(records, 0o750); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	ids := map[string]string{
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1": "alice", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa2": "alice",
		"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb1": "bob", "ccccccccccccccccccccccccccccccc1": "robot+ci",
	}
	for id, sub := range ids {
		b, _ := json.Marshal(token.RefreshRecord{ID: id, Subject: sub, IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
		if err := os.WriteFile(filepath.Join(records, id+".json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		args = append(append([]string{"auth", "tokens"}, args...), "--config", cfgFile)
		if err := run(context.Background(), args, strings.NewReader(""), &out, new(bytes.Buffer)); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out.String()
	}
	count := func(list string) int { return len(strings.Split(strings.TrimSpace(list), "\n")) - 1 }

	if got := cmd("list"); count(got) != 4 || !strings.Contains(got, "robot+ci") {
		t.Errorf("list:\n%s", got)
	}
	if got := cmd("list", "--user", "alice"); count(got) != 2 || strings.Contains(got, "bob") {
		t.Errorf("list --user alice:\n%s", got)
	}
	cmd("revoke", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1")
	if got := cmd("list", "--user", "alice"); count(got) != 1 || strings.Contains(got, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1") {
		t.Errorf("after revoking one of alice's:\n%s", got)
	}
	if got := cmd("revoke", "--user", "bob"); got != "revoked 1 refresh tokens\n" {
		t.Errorf("revoke --user bob: %q", got)
	}
	if got := cmd("revoke", "--all"); got != "revoked 2 refresh tokens\n" {
		t.Errorf("revoke --all: %q", got)
	}
	if got := cmd("list"); count(got) != 0 {
		t.Errorf("list after revoking all:\n%s", got)
	}
	// Revoking needs exactly one of ID, --user, --all.
	err = run(context.Background(), []string{"auth", "tokens", "revoke", "--all", "--user", "bob", "--config", cfgFile}, strings.NewReader(""), new(bytes.Buffer), new(bytes.Buffer))
	if !errors.As(err, new(usageError)) {
		t.Errorf("revoke --all --user: %v, want a usage error", err)
	}
}

// TestPolicyExplain: a denial exits 1, an allowance 0; the admin scope is
// explained; a robot is read from the storage --data names.
func TestPolicyExplain(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := filepath.Join(dir, "key.pem")
	if err := token.GenerateKeyFile(key); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgFile, []byte(`version: 1
auth:
  enabled: true
  token:
    signingKeyFile: `+key+`
  admins: [user:root]
  rules:
    - name: devs
      subjects: [user:alice]
      repositories: ["team/**"]
      actions: [pull]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	explain := func(args ...string) (string, error) {
		var out bytes.Buffer
		args = append(append([]string{"policy", "explain"}, args...), "--config", cfgFile, "--data", data)
		err := run(context.Background(), args, strings.NewReader(""), &out, new(bytes.Buffer))
		return out.String(), err
	}
	exitCode := func(err error) int {
		var ee exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		if err != nil {
			return -1
		}
		return 0
	}
	if out, err := runOutput(t, "robot", "create", "ci", "--repo", "team/**", "--action", "pull", "--config", cfgFile, "--data", data); err != nil {
		t.Fatalf("robot create: %v\n%s", err, out)
	}
	for _, tt := range []struct {
		subject, scope string
		want           int
		says           string
	}{
		{"user:alice", "repository:team/app:pull", 0, `rule "devs"`},
		{"user:alice", "repository:team/app:push", 1, "default deny"},
		{"user:root", "registry:admin:*", 0, "listed in admins"},
		{"user:alice", "registry:admin:*", 1, "not listed in admins"},
		{"anonymous", "registry:admin:*", 1, "not listed in admins"},
		{"robot:ci", "repository:team/app:pull", 0, "robot's scope"},
		{"robot:ci", "repository:team/app:push", 1, "outside the robot's scope"},
	} {
		out, err := explain("--subject", tt.subject, "--scope", tt.scope)
		if got := exitCode(err); got != tt.want || !strings.Contains(out, tt.says) {
			t.Errorf("%s %s: exit %d (%v), want %d; output:\n%s", tt.subject, tt.scope, got, err, tt.want, out)
		}
	}
}

// runOutput runs the command line and returns its output.
func runOutput(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), args, strings.NewReader(""), &out, new(bytes.Buffer))
	return out.String(), err
}
