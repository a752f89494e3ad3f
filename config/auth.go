package config

import (
	"fmt"
	"path"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/portcullis/portcullis/policy"
)

// Auth configures authentication (the token service, users, groups, robot
// accounts) and authorization (access rules and tag rules). The zero value
// means auth is disabled: every client may pull, push and delete.
type Auth struct {
	// Enabled turns token authentication on.
	Enabled bool      `yaml:"enabled"`
	Token   AuthToken `yaml:"token"`
	// Users are the accounts defined in this file.
	Users []AuthUser `yaml:"users"`
	// Groups name sets of users that rules can refer to.
	Groups []AuthGroup `yaml:"groups"`
	// HtpasswdFile is an Apache htpasswd file with bcrypt entries, read at
	// start and at each reload; its users live beside Users (a name in both
	// is an error at load).
	HtpasswdFile string `yaml:"htpasswdFile"`
	// AnonymousPull lets clients without credentials pull every repository
	// that no deny rule protects.
	AnonymousPull bool `yaml:"anonymousPull"`
	// Catalog lists the subjects allowed to call GET /v2/_catalog.
	Catalog []string `yaml:"catalog"`
	// Admins lists the subjects allowed the management API (repositories
	// and tags with their state, robot accounts over HTTP): the scope
	// registry:admin:*. Empty: nobody.
	Admins []string   `yaml:"admins"`
	Robots AuthRobots `yaml:"robots"`
	// Rules grant and deny repository actions; see AccessRule.
	Rules []AccessRule `yaml:"rules"`
	// TagRules restrict who may create, move and delete tags.
	TagRules  []TagRule     `yaml:"tagRules"`
	RateLimit AuthRateLimit `yaml:"rateLimit"`
	Audit     AuthAudit     `yaml:"audit"`
}

// AuthToken configures the bearer tokens the token service issues.
type AuthToken struct {
	// Issuer is the iss claim of every token.
	Issuer string `yaml:"issuer"`
	// Service is the aud claim, and the service name clients send.
	Service string `yaml:"service"`
	// Realm is the absolute URL of the token endpoint announced in
	// WWW-Authenticate. Empty: derived by the server from http.host.
	Realm string `yaml:"realm"`
	// Lifetime of an access token.
	Lifetime Duration `yaml:"lifetime"`
	// RefreshLifetime of a refresh token (docker login's identity token).
	RefreshLifetime Duration `yaml:"refreshLifetime"`
	// Leeway tolerated on exp, nbf and iat for clock skew between replicas.
	Leeway Duration `yaml:"leeway"`
	// SigningKeyFile is the PEM private key (EC P-256 or RSA) that signs.
	SigningKeyFile string `yaml:"signingKeyFile"`
	// VerificationKeyFiles are further PEM keys (public or private) whose
	// tokens are still accepted: the previous signer during a rotation.
	VerificationKeyFiles []string `yaml:"verificationKeyFiles"`
}

// AuthUser is one account defined in the configuration.
type AuthUser struct {
	Name string `yaml:"name"`
	// PasswordHash is a bcrypt hash ($2a$, $2b$ or $2y$); not a secret.
	PasswordHash string `yaml:"passwordHash"`
	// PasswordFile holds the password itself (for example a mounted
	// Kubernetes secret); it is hashed when read.
	PasswordFile string `yaml:"passwordFile"`
}

// AuthGroup is a named set of users.
type AuthGroup struct {
	Name    string   `yaml:"name"`
	Members []string `yaml:"members"`
}

// AuthRobots configures robot accounts, which are created at run time and
// stored (hashed) in the storage backend so every replica sees them.
type AuthRobots struct {
	// Enabled allows robot accounts.
	Enabled *bool `yaml:"enabled"`
	// Path is the storage-backend directory holding robot records.
	Path string `yaml:"path"`
	// MaxLifetime caps a robot's expiry; 0 means robots may never expire.
	MaxLifetime Duration `yaml:"maxLifetime"`
}

// On reports whether robot accounts are allowed (default true).
func (r AuthRobots) On() bool { return r.Enabled == nil || *r.Enabled }

// AccessRule allows or denies actions on repositories to subjects. All
// rules that match are considered; a matching deny always wins.
type AccessRule struct {
	// Name identifies the rule in decisions and audit lines; default rules[i].
	Name string `yaml:"name"`
	// Subjects: user:NAME, group:NAME, robot:NAME (NAME may be a glob),
	// anonymous, authenticated.
	Subjects []string `yaml:"subjects"`
	// Repositories are patterns: exact, * within one path segment,
	// ** across segments (team/** matches everything below team/).
	Repositories []string `yaml:"repositories"`
	// Actions: pull, push, delete, or * for all three.
	Actions []string `yaml:"actions"`
	// Effect is allow (default) or deny.
	Effect string `yaml:"effect"`
}

// TagRule restricts tag changes in matching repositories.
type TagRule struct {
	// Name identifies the rule in decisions; default tagRules[i].
	Name string `yaml:"name"`
	// Repositories are patterns as in AccessRule; default ** (all).
	Repositories []string `yaml:"repositories"`
	// Tags are glob patterns on the tag (v*, release-[0-9]*).
	Tags []string `yaml:"tags"`
	// Immutable: once set, nobody may overwrite or delete a matching tag.
	Immutable bool `yaml:"immutable"`
	// Create, Overwrite and Delete list the only subjects allowed to do
	// that to a matching tag. Empty means no restriction from this rule.
	Create    []string `yaml:"create"`
	Overwrite []string `yaml:"overwrite"`
	Delete    []string `yaml:"delete"`
}

// AuthRateLimit slows down password guessing.
type AuthRateLimit struct {
	// AddressFailures is how many failed logins one source address may make
	// before it is locked out.
	AddressFailures int `yaml:"addressFailures"`
	// UserFailures is how many failed logins one user may see (from all
	// addresses together) before that user is locked out.
	UserFailures int `yaml:"userFailures"`
	// Backoff is the first lockout; each further failure doubles it.
	Backoff Duration `yaml:"backoff"`
	// MaxBackoff caps the lockout.
	MaxBackoff Duration `yaml:"maxBackoff"`
	// Window: failures older than this are forgotten.
	Window Duration `yaml:"window"`
}

// AuthAudit configures the audit log: one JSON line per authentication,
// decision and write.
type AuthAudit struct {
	// File is a path, "stdout", "stderr", or empty for no audit log.
	File string `yaml:"file"`
	// MaxSize is the size past which a file is rotated (FILE.1, FILE.2...).
	MaxSize Size `yaml:"maxSize"`
	// MaxFiles is how many rotated files are kept.
	MaxFiles int `yaml:"maxFiles"`
}

// Provision fills unset auth fields with their defaults. It is idempotent
// and fills them even when auth is disabled, so Default() shows them.
func (a *Auth) Provision() {
	if a.Token.Issuer == "" {
		a.Token.Issuer = "portcullis"
	}
	if a.Token.Service == "" {
		a.Token.Service = "portcullis"
	}
	if a.Token.Lifetime == 0 {
		a.Token.Lifetime = Duration(5 * time.Minute)
	}
	if a.Token.RefreshLifetime == 0 {
		a.Token.RefreshLifetime = Duration(7 * 24 * time.Hour)
	}
	if a.Token.Leeway == 0 {
		a.Token.Leeway = Duration(30 * time.Second)
	}
	if len(a.Catalog) == 0 {
		a.Catalog = []string{"authenticated"}
	}
	if a.Robots.Path == "" {
		a.Robots.Path = "/portcullis/robots"
	}
	defaultTrue(&a.Robots.Enabled)
	if a.RateLimit.AddressFailures == 0 {
		a.RateLimit.AddressFailures = 5
	}
	if a.RateLimit.UserFailures == 0 {
		a.RateLimit.UserFailures = 20
	}
	if a.RateLimit.Backoff == 0 {
		a.RateLimit.Backoff = Duration(time.Second)
	}
	if a.RateLimit.MaxBackoff == 0 {
		a.RateLimit.MaxBackoff = Duration(15 * time.Minute)
	}
	if a.RateLimit.Window == 0 {
		a.RateLimit.Window = Duration(15 * time.Minute)
	}
	if a.Audit.MaxSize == 0 {
		a.Audit.MaxSize = 100 << 20
	}
	if a.Audit.MaxFiles == 0 {
		a.Audit.MaxFiles = 5
	}
}

// authNameRE is the syntax of user and group names.
var authNameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._@-]{0,63}$`) })

// Validate checks the provisioned auth section and returns every problem,
// each prefixed with its key path under prefix (normally "auth").
func (a *Auth) Validate(prefix string) []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", prefix, key, fmt.Sprintf(format, args...)))
	}
	if !a.Enabled {
		a.validateDisabled(bad)
		return errs
	}
	a.Token.validate(bad)
	users := a.validateUsers(bad)
	subjects := subjectChecker{bad: bad, groups: a.validateGroups(bad, users)}
	subjects.check("catalog", a.Catalog)
	subjects.check("admins", a.Admins)
	for i, s := range a.Admins {
		if s == "anonymous" {
			bad(fmt.Sprintf("admins[%d]", i), "anonymous clients are never admins: name users, groups or robots")
		}
	}
	a.Robots.validate(bad)
	for i, r := range a.Rules {
		r.validate(bad, fmt.Sprintf("rules[%d]", i), subjects)
	}
	for i, r := range a.TagRules {
		r.validate(bad, fmt.Sprintf("tagRules[%d]", i), subjects)
	}
	a.RateLimit.validate(bad)
	validateAudit(a.Audit, bad)
	return errs
}

// validateDisabled reports the settings that would have no effect, and
// leave every client with full access, while auth is disabled.
func (a *Auth) validateDisabled(bad func(key, format string, args ...any)) {
	for key, set := range map[string]bool{
		"users": len(a.Users) > 0, "groups": len(a.Groups) > 0, "htpasswdFile": a.HtpasswdFile != "",
		"rules": len(a.Rules) > 0, "tagRules": len(a.TagRules) > 0, "anonymousPull": a.AnonymousPull,
	} {
		if set {
			bad(key, "set, but auth.enabled is false: every client would have full access")
		}
	}
}

func (t AuthToken) validate(bad func(key, format string, args ...any)) {
	if t.Issuer == "" {
		bad("token.issuer", "required")
	}
	if t.Service == "" {
		bad("token.service", "required")
	}
	if t.Realm != "" && !strings.HasPrefix(t.Realm, "http://") && !strings.HasPrefix(t.Realm, "https://") {
		bad("token.realm", "must be an absolute http or https URL")
	}
	if t.Lifetime < Duration(time.Second) || t.Lifetime > Duration(24*time.Hour) {
		bad("token.lifetime", "must be between 1s and 24h, got %s", t.Lifetime.D())
	}
	if t.RefreshLifetime < 0 {
		bad("token.refreshLifetime", "must not be negative")
	}
	if t.Leeway < 0 || t.Leeway > Duration(5*time.Minute) {
		bad("token.leeway", "must be between 0 and 5m")
	}
	if t.SigningKeyFile == "" {
		bad("token.signingKeyFile", "required (create one with: registry auth keygen FILE)")
	}
	for i, f := range t.VerificationKeyFiles {
		if f == "" {
			bad(fmt.Sprintf("token.verificationKeyFiles[%d]", i), "empty path")
		}
	}
}

// validateUsers checks the users and returns the set of their names.
func (a *Auth) validateUsers(bad func(key, format string, args ...any)) map[string]bool {
	users := map[string]bool{}
	for i, u := range a.Users {
		key := fmt.Sprintf("users[%d]", i)
		switch {
		case strings.Contains(u.Name, "+"):
			bad(key+".name", "%q: a user name must not contain \"+\" (reserved for robot+NAME)", u.Name)
		case !authNameRE().MatchString(u.Name):
			bad(key+".name", "invalid user name %q", u.Name)
		case users[u.Name]:
			bad(key+".name", "duplicate user %q", u.Name)
		}
		users[u.Name] = true
		switch {
		case u.PasswordHash == "" && u.PasswordFile == "":
			bad(key, "passwordHash or passwordFile required")
		case u.PasswordHash != "" && u.PasswordFile != "":
			bad(key, "passwordHash and passwordFile are mutually exclusive")
		case u.PasswordHash != "" && !isBcrypt(u.PasswordHash):
			bad(key+".passwordHash", "not a bcrypt hash (want $2a$, $2b$ or $2y$, 60 characters; a password belongs in passwordFile)")
		}
	}
	return users
}

// validateGroups checks the groups against the users and returns the set
// of their names.
func (a *Auth) validateGroups(bad func(key, format string, args ...any), users map[string]bool) map[string]bool {
	groups := map[string]bool{}
	for i, g := range a.Groups {
		key := fmt.Sprintf("groups[%d]", i)
		if !authNameRE().MatchString(g.Name) {
			bad(key+".name", "invalid group name %q", g.Name)
		}
		if groups[g.Name] {
			bad(key+".name", "duplicate group %q", g.Name)
		}
		groups[g.Name] = true
		for j, m := range g.Members {
			// Members may come from the htpasswd file, which is read later.
			if !users[m] && a.HtpasswdFile == "" {
				bad(fmt.Sprintf("%s.members[%d]", key, j), "unknown user %q", m)
			}
		}
	}
	return groups
}

// subjectChecker checks the subject lists of rules against the groups.
type subjectChecker struct {
	bad    func(key, format string, args ...any)
	groups map[string]bool
}

// check reports each malformed subject of the list under key, and whether
// the list names anonymous.
func (c subjectChecker) check(key string, subjects []string) (anonymous bool) {
	for j, s := range subjects {
		kind, name, err := parseSubject(s)
		if err != nil {
			c.bad(fmt.Sprintf("%s[%d]", key, j), "%v", err)
			continue
		}
		switch kind {
		case "anonymous":
			anonymous = true
		case "group":
			if !c.groups[name] {
				c.bad(fmt.Sprintf("%s[%d]", key, j), "unknown group %q", name)
			}
		}
	}
	return anonymous
}

func (r AuthRobots) validate(bad func(key, format string, args ...any)) {
	if r.MaxLifetime < 0 {
		bad("robots.maxLifetime", "must not be negative")
	}
	if !strings.HasPrefix(r.Path, "/") {
		bad("robots.path", "must be an absolute storage path like /portcullis/robots")
	}
}

// validate checks the access rule at key.
func (r AccessRule) validate(bad func(key, format string, args ...any), key string, subjects subjectChecker) {
	if len(r.Subjects) == 0 {
		bad(key+".subjects", "required")
	}
	anonymous := subjects.check(key+".subjects", r.Subjects)
	if len(r.Repositories) == 0 {
		bad(key+".repositories", "required")
	}
	checkPatterns(bad, key+".repositories", r.Repositories)
	if len(r.Actions) == 0 {
		bad(key+".actions", "required")
	}
	for j, act := range r.Actions {
		switch act {
		case "pull":
		case "push", "delete", "*":
			if anonymous && r.Effect != "deny" {
				bad(fmt.Sprintf("%s.actions[%d]", key, j), "anonymous may only be allowed to pull, not %q", act)
			}
		default:
			bad(fmt.Sprintf("%s.actions[%d]", key, j), "unknown action %q (want pull, push, delete or *)", act)
		}
	}
	switch r.Effect {
	case "", "allow", "deny":
	default:
		bad(key+".effect", "must be allow or deny, got %q", r.Effect)
	}
}

// validate checks the tag rule at key.
func (r TagRule) validate(bad func(key, format string, args ...any), key string, subjects subjectChecker) {
	checkPatterns(bad, key+".repositories", r.Repositories)
	if len(r.Tags) == 0 {
		bad(key+".tags", "required")
	}
	for j, tag := range r.Tags {
		if _, err := policy.ParseGlob(tag); err != nil {
			bad(fmt.Sprintf("%s.tags[%d]", key, j), "%v", err)
		}
	}
	subjects.check(key+".create", r.Create)
	subjects.check(key+".overwrite", r.Overwrite)
	subjects.check(key+".delete", r.Delete)
	if !r.Immutable && len(r.Create)+len(r.Overwrite)+len(r.Delete) == 0 {
		bad(key, "restricts nothing: set immutable, create, overwrite or delete")
	}
}

func (rl AuthRateLimit) validate(bad func(key, format string, args ...any)) {
	if rl.AddressFailures < 1 {
		bad("rateLimit.addressFailures", "must be at least 1")
	}
	if rl.UserFailures < 1 {
		bad("rateLimit.userFailures", "must be at least 1")
	}
	if rl.Backoff <= 0 {
		bad("rateLimit.backoff", "must be positive")
	}
	if rl.MaxBackoff < rl.Backoff {
		bad("rateLimit.maxBackoff", "must be at least rateLimit.backoff")
	}
	if rl.Window <= 0 {
		bad("rateLimit.window", "must be positive")
	}
}

// validateAudit checks the provisioned audit section.
func validateAudit(a AuthAudit, bad func(key, format string, args ...any)) {
	if a.MaxSize < 64<<10 {
		bad("audit.maxSize", "must be at least 64KiB")
	}
	if a.MaxFiles < 1 {
		bad("audit.maxFiles", "must be at least 1")
	}
}

// parseSubject splits a subject string as rules write it.
func parseSubject(s string) (kind, name string, err error) {
	switch s {
	case "anonymous", "authenticated":
		return s, "", nil
	}
	kind, name, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return "", "", fmt.Errorf("invalid subject %q (want user:NAME, group:NAME, robot:NAME, anonymous or authenticated)", s)
	}
	switch kind {
	case "user", "group", "robot":
	default:
		return "", "", fmt.Errorf("unknown subject kind %q in %q", kind, s)
	}
	if _, err := path.Match(name, ""); err != nil {
		return "", "", fmt.Errorf("invalid subject name pattern %q", name)
	}
	return kind, name, nil
}

func isBcrypt(h string) bool {
	return len(h) == 60 && (strings.HasPrefix(h, "$2a$") || strings.HasPrefix(h, "$2b$") || strings.HasPrefix(h, "$2y$"))
}
