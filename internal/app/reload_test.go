package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/portcullis/portcullis/auth/token"
	"github.com/portcullis/portcullis/config"
	"github.com/portcullis/portcullis/internal/app"
	"github.com/portcullis/portcullis/internal/testenv"
)

// reloadable is an in-process registry whose configuration is rebuilt by
// base and then change at each reload.
type reloadable struct {
	app    *app.App
	url    string
	host   string
	change func(c *config.Config)
}

func startReloadable(t *testing.T, base func(c *config.Config)) *reloadable {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	r := &reloadable{host: ln.Addr().String()}
	load := func() (*config.Config, error) {
		cfg := config.Default()
		cfg.DataDir, cfg.HTTP.Addr = dataDir, r.host
		base(cfg)
		if r.change != nil {
			r.change(cfg)
		}
		cfg.Provision()
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
		return cfg, nil
	}
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	log, err := app.NewLogger(cfg.Log, &testenv.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	r.app, err = app.New(context.Background(), cfg, log, app.Options{Load: load})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(r.app.Handler())
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(func() {
		srv.Close()
		if err := r.app.Close(); err != nil {
			t.Errorf("close app: %v", err)
		}
	})
	r.url = srv.URL
	return r
}

// getAs GETs path with user's basic credentials and returns the status
// and body.
func (r *reloadable) getAs(t *testing.T, path, user, pw string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, r.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, pw)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// authFiles returns a directory holding a token signing key and alice's
// password file, with their paths.
func authFiles(t *testing.T, password string) (dir, key, pwFile string) {
	t.Helper()
	dir = t.TempDir()
	key, pwFile = filepath.Join(dir, "key.pem"), filepath.Join(dir, "alice")
	if err := token.GenerateKeyFile(key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, key, pwFile
}

// TestReloadAuth: a changed password file and a changed rule take effect
// at the reload, not before; a configuration that needs a restart, or
// whose files are missing, is refused whole, naming every problem, and the
// running one stays in effect.
func TestReloadAuth(t *testing.T) {
	t.Parallel()
	dir, key, pwFile := authFiles(t, "first-password")
	writePW := func(pw string) {
		if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	actions := []string{"pull", "push"}
	r := startReloadable(t, func(c *config.Config) {
		c.Auth.Enabled = true
		c.Auth.Token.SigningKeyFile = key
		c.Auth.Users = []config.AuthUser{{Name: "alice", PasswordFile: pwFile}}
		c.Auth.Rules = []config.AccessRule{{Subjects: []string{"user:alice"}, Repositories: []string{"team/**"}, Actions: actions}}
	})
	push := func(pw string) error {
		img, err := random.Image(512, 1) // new each time: a push of what is there writes nothing
		if err != nil {
			t.Fatal(err)
		}
		return remote.Write(mustRef(t, r.host+"/team/app:v1"), img, remote.WithAuth(&authn.Basic{Username: "alice", Password: pw}))
	}
	pull := func(pw string) error {
		_, err := remote.Head(mustRef(t, r.host+"/team/app:v1"), remote.WithAuth(&authn.Basic{Username: "alice", Password: pw}))
		return err
	}
	if err := push("first-password"); err != nil {
		t.Fatalf("push before any reload: %v", err)
	}

	writePW("second-password")
	if err := push("second-password"); err == nil {
		t.Fatal("a new password took effect without a reload")
	}
	if err := r.app.Reload(context.Background()); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if err := push("first-password"); err == nil {
		t.Error("the old password still works after the reload")
	}
	if err := push("second-password"); err != nil {
		t.Errorf("the new password does not work after the reload: %v", err)
	}

	actions = []string{"pull"}
	if err := r.app.Reload(context.Background()); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if err := push("second-password"); err == nil {
		t.Error("alice still pushes after the rule lost push")
	}
	if err := pull("second-password"); err != nil {
		t.Errorf("alice no longer pulls: %v", err)
	}

	refusals := []struct {
		name   string
		change func(c *config.Config)
		want   []string
	}{
		{name: "restart needed", change: func(c *config.Config) {
			c.HTTP.Addr = "127.0.0.1:1"
			c.Storage.Filesystem.RootDirectory = dir
			c.GC.Workers = 3
			c.Auth.Rules[0].Actions = []string{"pull", "push"}
			c.Auth.Users[0].PasswordFile = filepath.Join(dir, "gone")
		}, want: []string{"http.addr", "storage.filesystem.rootDirectory", "gc.workers", "gone"}},
		{name: "invalid", change: func(c *config.Config) {
			c.Auth.Rules[0].Actions = []string{"fly"}
			c.Auth.Users[0].Name = "bad name"
		}, want: []string{"auth.rules[0].actions[0]", "auth.users[0].name"}},
		{name: "missing files", change: func(c *config.Config) {
			c.Auth.Users[0].PasswordFile = filepath.Join(dir, "missing-password")
			c.Auth.Token.SigningKeyFile = filepath.Join(dir, "missing-signing.pem")
			c.Trust.Keys = []config.TrustKey{{Name: "k", File: filepath.Join(dir, "missing-key.pub")}}
			c.Trust.Policies = []config.TrustPolicy{{Repositories: []string{"team/**"}, Signers: []string{"k"}}}
		}, want: []string{"missing-password", "missing-signing.pem", "missing-key.pub"}},
	}
	for _, tc := range refusals {
		r.change = tc.change
		err := r.app.Reload(context.Background())
		if !errors.Is(err, app.ErrRefused) {
			t.Fatalf("%s: reload = %v, want a refusal", tc.name, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: refusal does not name %s: %v", tc.name, w, err)
			}
		}
		// The running configuration stays whole: the rule without push,
		// the second password.
		if err := pull("second-password"); err != nil {
			t.Errorf("%s: alice no longer pulls: %v", tc.name, err)
		}
		if err := push("second-password"); err == nil {
			t.Errorf("%s: part of the refused configuration took effect", tc.name)
		}
	}

	// /metrics is behind auth and follows the reloaded password too.
	scrape := func(pw string) (int, string) { return r.getAs(t, "/metrics", "alice", pw) }
	if code, _ := scrape("first-password"); code != http.StatusUnauthorized {
		t.Errorf("/metrics with the password the reload replaced: %d, want 401", code)
	}
	code, body := scrape("second-password")
	if code != http.StatusOK {
		t.Fatalf("/metrics with the reloaded password: %d %s", code, body)
	}
	for _, want := range []string{
		"portcullis_config_generation 3",
		`portcullis_config_reloads_total{result="success"} 2`,
		`portcullis_config_reloads_total{result="failure"} 3`,
		"portcullis_config_last_reload_successful 0",
		"portcullis_config_last_reload_success_timestamp_seconds ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestReloadTrust: a trust policy added by a reload gates the next tag
// push; removed by the next reload, it gates nothing.
func TestReloadTrust(t *testing.T) {
	t.Parallel()
	key := trustKeyFile(t)
	r := startReloadable(t, func(*config.Config) {})
	push := func(tag string) error {
		img, err := random.Image(512, 1)
		if err != nil {
			t.Fatal(err)
		}
		return remote.Write(mustRef(t, r.host+"/team/app:"+tag), img)
	}
	if err := push("v1"); err != nil {
		t.Fatalf("push without a policy: %v", err)
	}
	r.change = func(c *config.Config) {
		c.Trust.Keys = []config.TrustKey{{Name: "release", File: key}}
		c.Trust.Policies = []config.TrustPolicy{{Repositories: []string{"team/**"}, Mode: "enforce", Signers: []string{"release"}}}
	}
	if err := r.app.Reload(context.Background()); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if err := push("v2"); err == nil || !strings.Contains(err.Error(), "DENIED") {
		t.Errorf("unsigned tag push under the reloaded enforce policy: %v, want DENIED", err)
	}
	r.change = nil
	if err := r.app.Reload(context.Background()); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if err := push("v3"); err != nil {
		t.Errorf("push after the policy was removed: %v", err)
	}
}

// TestReloadImmutableTagsBindRetention: an immutable tag rule added by a
// reload keeps its tags from the background collector's retention, as it
// keeps them from clients.
func TestReloadImmutableTagsBindRetention(t *testing.T) {
	t.Parallel()
	_, key, pwFile := authFiles(t, "alice-password")
	grace := config.Duration(0)
	r := startReloadable(t, func(c *config.Config) {
		c.GC.Grace = &grace
		c.Retention.Policies = []config.RetentionPolicy{{Repositories: []string{"team/**"}, Keep: []config.KeepRule{{Tags: []string{"latest"}}}}}
		c.Auth.Enabled = true
		c.Auth.Token.SigningKeyFile = key
		c.Auth.Users = []config.AuthUser{{Name: "alice", PasswordFile: pwFile}}
		c.Auth.Rules = []config.AccessRule{{Subjects: []string{"user:alice"}, Repositories: []string{"team/**"}, Actions: []string{"pull", "push"}}}
	})
	alice := remote.WithAuth(&authn.Basic{Username: "alice", Password: "alice-password"})
	for _, tag := range []string{"latest", "v1", "old"} {
		img, err := random.Image(512, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(mustRef(t, r.host+"/team/app:"+tag), img, alice); err != nil {
			t.Fatalf("push %s: %v", tag, err)
		}
	}
	r.change = func(c *config.Config) {
		c.Auth.TagRules = []config.TagRule{{Repositories: []string{"team/**"}, Tags: []string{"v*"}, Immutable: true}}
	}
	if err := r.app.Reload(context.Background()); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if _, err := app.CollectNow(context.Background(), r.app); err != nil {
		t.Fatalf("collect: %v", err)
	}
	if _, err := remote.Head(mustRef(t, r.host+"/team/app:v1"), alice); err != nil {
		t.Errorf("a tag made immutable by the reload was deleted by retention: %v", err)
	}
	if _, err := remote.Head(mustRef(t, r.host+"/team/app:latest"), alice); err != nil {
		t.Errorf("the kept tag: %v", err)
	}
	if _, err := remote.Head(mustRef(t, r.host+"/team/app:old"), alice); err == nil {
		t.Error("retention kept a tag no rule keeps or protects")
	}
}

// TestReloadAdminsAndRobots: a robot created over the management API
// outlives a reload; auth.admins changed by a reload decides the next
// token's admin scope.
func TestReloadAdminsAndRobots(t *testing.T) {
	t.Parallel()
	_, key, pwFile := authFiles(t, "alice-password")
	admins := []string{"user:alice"}
	r := startReloadable(t, func(c *config.Config) {
		c.Auth.Enabled = true
		c.Auth.Token.SigningKeyFile = key
		c.Auth.Users = []config.AuthUser{{Name: "alice", PasswordFile: pwFile}}
		c.Auth.Admins = admins
	})
	tokenFor := func(user, pw, scope string) string {
		code, body := r.getAs(t, "/token?service=portcullis&scope="+scope, user, pw)
		var out struct{ Token string }
		if code != http.StatusOK || json.Unmarshal([]byte(body), &out) != nil {
			t.Fatalf("token for %s: %d %s", user, code, body)
		}
		return out.Token
	}
	createRobot := func(name string) (int, string) {
		req, err := http.NewRequest(http.MethodPost, r.url+"/api/v1/robots",
			strings.NewReader(`{"name":"`+name+`","access":[{"repositories":["team/**"],"actions":["pull"]}]}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tokenFor("alice", "alice-password", "registry:admin:*"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ Login, Secret string }
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out.Secret
	}
	code, secret := createRobot("ci")
	if code != http.StatusCreated || secret == "" {
		t.Fatalf("create a robot as an admin: %d", code)
	}
	admins = []string{"user:bob"}
	if err := r.app.Reload(context.Background()); err != nil {
		t.Fatalf("reload: %v", err)
	}
	tokenFor("robot+ci", secret, "repository:team/app:pull") // fails the test when refused
	if code, _ := createRobot("ci2"); code != http.StatusForbidden {
		t.Errorf("create a robot after the reload took alice out of auth.admins: %d, want 403", code)
	}
}

// TestWatchLeavesARefusalAlone: files a SIGHUP's reload refused are not
// reloaded again by the watch (one refusal logged and counted), until they
// change.
func TestWatchLeavesARefusalAlone(t *testing.T) {
	t.Parallel()
	_, key, pwFile := authFiles(t, "alice-password")
	r := startReloadable(t, func(c *config.Config) {
		c.Auth.Enabled = true
		c.Auth.Token.SigningKeyFile = key
		c.Auth.Users = []config.AuthUser{{Name: "alice", PasswordFile: pwFile}}
		c.Reload.Watch = true
	})
	failures := func(pw string) string {
		code, body := r.getAs(t, "/metrics", "alice", pw)
		for _, line := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(line, `portcullis_config_reloads_total{result="failure"} `); ok {
				return v
			}
		}
		t.Fatalf("/metrics: %d %s", code, body)
		return ""
	}
	// A password file longer than bcrypt takes is refused.
	if err := os.WriteFile(pwFile, []byte(strings.Repeat("x", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.app.Reload(context.Background()); !errors.Is(err, app.ErrRefused) {
		t.Fatalf("reload = %v, want a refusal", err)
	}
	app.WatchOnce(context.Background(), r.app)
	app.WatchOnce(context.Background(), r.app)
	if got := failures("alice-password"); got != "1" {
		t.Errorf("refused reloads after a refused SIGHUP and two checks of the same files: %s, want 1", got)
	}
	if err := os.WriteFile(pwFile, []byte("alice-new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	app.WatchOnce(context.Background(), r.app) // the fixed file is reloaded
	if got := failures("alice-new"); got != "1" {
		t.Errorf("refused reloads after the files were fixed: %s, want 1", got)
	}
}
