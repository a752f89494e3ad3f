package token

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"

	pauth "github.com/portcullis/portcullis/auth"
)

// Store is where robot records live: the shared storage backend, so every
// replica sees the same robots. distribution's storagedriver.StorageDriver
// satisfies it. A missing path must produce storagedriver.PathNotFoundError.
type Store interface {
	GetContent(ctx context.Context, path string) ([]byte, error)
	PutContent(ctx context.Context, path string, content []byte) error
	List(ctx context.Context, path string) ([]string, error)
	Delete(ctx context.Context, path string) error
}

// Errors returned by Robots.
var (
	// ErrRobotExists is returned by Create when the name is taken.
	ErrRobotExists = errors.New("robot already exists")
	// ErrRobotNotFound is returned by Get and Revoke for an unknown robot.
	ErrRobotNotFound = errors.New("robot not found")
	// ErrInvalidRobot is returned (wrapped, with the reason) by Create for
	// an invalid name, scope or lifetime.
	ErrInvalidRobot = errors.New("invalid robot")
)

// invalidRobotError is a refusal of a RobotSpec: its message is the reason
// alone, and it is ErrInvalidRobot.
type invalidRobotError struct{ err error }

func (e invalidRobotError) Error() string   { return e.err.Error() }
func (e invalidRobotError) Unwrap() []error { return []error{e.err, ErrInvalidRobot} }
func invalidRobot(format string, args ...any) error {
	return invalidRobotError{fmt.Errorf(format, args...)}
}

// Robot is a robot account as stored: never its secret, only a hash.
type Robot struct {
	Name        string       `json:"name"`
	Description string       `json:"description,omitempty"`
	Access      []RobotGrant `json:"access"`
	// SecretHash is the hex SHA-256 of the secret (secrets are 256-bit
	// random, so a fast hash suffices).
	SecretHash string    `json:"secretHash"`
	CreatedAt  time.Time `json:"createdAt"`
	CreatedBy  string    `json:"createdBy,omitempty"`
	// ExpiresAt is when the robot stops working; zero means never.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
}

// RobotGrant allows actions on repositories matching any pattern.
type RobotGrant struct {
	Repositories []string `json:"repositories"`
	Actions      []string `json:"actions"`
}

// Subject returns the robot as a policy subject with its scope. It returns
// an error for a stored scope that no longer parses.
func (r Robot) Subject() (pauth.Subject, error) {
	s := pauth.Subject{Kind: pauth.Robot, Name: r.Name}
	for _, g := range r.Access {
		p, err := pauth.NewPermission(g.Repositories, g.Actions)
		if err != nil {
			return pauth.Subject{}, fmt.Errorf("robot %s: %w", r.Name, err)
		}
		s.Scope = append(s.Scope, p)
	}
	return s, nil
}

// RobotsOptions configures Robots. Zero values mean the defaults.
type RobotsOptions struct {
	// Dir is the storage directory of robot records; default
	// /portcullis/robots.
	Dir string
	// MaxLifetime caps a robot's lifetime; 0 means unlimited.
	MaxLifetime time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Robots manages robot accounts in a Store. It is safe for concurrent use;
// two replicas creating the same name at once is not detected (last wins).
type Robots struct {
	store Store
	opts  RobotsOptions
}

// NewRobots returns Robots stored in store. It returns an error for a
// relative directory.
func NewRobots(store Store, opts RobotsOptions) (*Robots, error) {
	if store == nil {
		return nil, errors.New("robots: no store")
	}
	if opts.Dir == "" {
		opts.Dir = "/portcullis/robots"
	}
	if !strings.HasPrefix(opts.Dir, "/") {
		return nil, fmt.Errorf("robots: directory %q must be absolute", opts.Dir)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Robots{store: store, opts: opts}, nil
}

var robotNameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`) })

// RobotSpec describes a robot to create.
type RobotSpec struct {
	Name        string
	Description string
	Access      []RobotGrant
	// Lifetime until expiry; 0 means never (or MaxLifetime when set).
	Lifetime  time.Duration
	CreatedBy string
}

// secretPrefix marks robot secrets so secret scanners recognise them.
const secretPrefix = "pcr_"

// Create stores a new robot and returns it with its secret, which is shown
// this once and never stored. It returns ErrRobotExists for a taken name
// and an error wrapping ErrInvalidRobot for an invalid name, scope or
// lifetime.
func (rs *Robots) Create(ctx context.Context, spec RobotSpec) (Robot, string, error) {
	if !robotNameRE().MatchString(spec.Name) {
		return Robot{}, "", invalidRobot("invalid robot name %q (lower-case letters, digits, . _ -)", spec.Name)
	}
	if len(spec.Access) == 0 {
		return Robot{}, "", invalidRobot("robot needs at least one access grant")
	}
	if spec.Lifetime < 0 {
		return Robot{}, "", invalidRobot("robot lifetime must not be negative")
	}
	if max := rs.opts.MaxLifetime; max > 0 {
		if spec.Lifetime == 0 {
			spec.Lifetime = max
		}
		if spec.Lifetime > max {
			return Robot{}, "", invalidRobot("robot lifetime %s exceeds the maximum %s", spec.Lifetime, max)
		}
	}
	now := rs.opts.Now().UTC()
	r := Robot{Name: spec.Name, Description: spec.Description, Access: spec.Access, CreatedAt: now, CreatedBy: spec.CreatedBy}
	if spec.Lifetime > 0 {
		r.ExpiresAt = now.Add(spec.Lifetime)
	}
	if _, err := r.Subject(); err != nil {
		return Robot{}, "", invalidRobotError{err}
	}
	if _, err := rs.Get(ctx, spec.Name); err == nil {
		return Robot{}, "", fmt.Errorf("create robot %s: %w", spec.Name, ErrRobotExists)
	} else if !errors.Is(err, ErrRobotNotFound) {
		return Robot{}, "", err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return Robot{}, "", fmt.Errorf("robot secret: %w", err)
	}
	secret := secretPrefix + base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256([]byte(secret))
	r.SecretHash = hex.EncodeToString(sum[:])
	data, err := json.Marshal(r)
	if err != nil {
		return Robot{}, "", fmt.Errorf("encode robot: %w", err)
	}
	if err := rs.store.PutContent(ctx, rs.path(r.Name), data); err != nil {
		return Robot{}, "", fmt.Errorf("store robot %s: %w", r.Name, err)
	}
	return r, secret, nil
}

func (rs *Robots) path(name string) string { return path.Join(rs.opts.Dir, name+".json") }

// Get returns a stored robot, expired or not. It returns ErrRobotNotFound
// for an unknown (or revoked) robot.
func (rs *Robots) Get(ctx context.Context, name string) (Robot, error) {
	if !robotNameRE().MatchString(name) {
		return Robot{}, fmt.Errorf("robot %q: %w", name, ErrRobotNotFound)
	}
	data, err := rs.store.GetContent(ctx, rs.path(name))
	if err != nil {
		if errors.As(err, new(storagedriver.PathNotFoundError)) {
			return Robot{}, fmt.Errorf("robot %s: %w", name, ErrRobotNotFound)
		}
		return Robot{}, fmt.Errorf("read robot %s: %w", name, err)
	}
	var r Robot
	if err := json.Unmarshal(data, &r); err != nil {
		return Robot{}, fmt.Errorf("decode robot %s: %w", name, err)
	}
	return r, nil
}

// List returns every stored robot, sorted by name.
func (rs *Robots) List(ctx context.Context) ([]Robot, error) {
	paths, err := rs.store.List(ctx, rs.opts.Dir)
	if err != nil {
		if errors.As(err, new(storagedriver.PathNotFoundError)) {
			return nil, nil
		}
		return nil, fmt.Errorf("list robots: %w", err)
	}
	sort.Strings(paths)
	var out []Robot
	for _, p := range paths {
		name, ok := strings.CutSuffix(path.Base(p), ".json")
		if !ok {
			continue
		}
		r, err := rs.Get(ctx, name)
		if errors.Is(err, ErrRobotNotFound) {
			continue // revoked between List and Get
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Revoke deletes a robot; its secret stops working at once and its tokens
// when they expire (at most the token lifetime). It returns
// ErrRobotNotFound for an unknown robot.
func (rs *Robots) Revoke(ctx context.Context, name string) error {
	if _, err := rs.Get(ctx, name); err != nil {
		return err
	}
	if err := rs.store.Delete(ctx, rs.path(name)); err != nil {
		if errors.As(err, new(storagedriver.PathNotFoundError)) {
			return fmt.Errorf("robot %s: %w", name, ErrRobotNotFound)
		}
		return fmt.Errorf("revoke robot %s: %w", name, err)
	}
	return nil
}

// Authenticate checks a robot's secret in constant time. It returns the
// robot, or ErrBadCredentials for an unknown, revoked or expired robot or a
// wrong secret; other errors are storage failures.
func (rs *Robots) Authenticate(ctx context.Context, name, secret string) (Robot, error) {
	sum := sha256.Sum256([]byte(secret))
	r, err := rs.Get(ctx, name)
	if errors.Is(err, ErrRobotNotFound) {
		return Robot{}, ErrBadCredentials
	}
	if err != nil {
		return Robot{}, err
	}
	want, err := hex.DecodeString(r.SecretHash)
	if err != nil || subtle.ConstantTimeCompare(sum[:], want) != 1 {
		return Robot{}, ErrBadCredentials
	}
	if r.expired(rs.opts.Now()) {
		return Robot{}, ErrBadCredentials
	}
	return r, nil
}

func (r Robot) expired(now time.Time) bool {
	return !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt)
}

func (r Robot) credential() string { return fingerprint([]byte(r.SecretHash)) }
