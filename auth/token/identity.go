package token

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"github.com/portcullis/portcullis/config"
)

// ErrBadCredentials is returned by every authentication that fails: unknown
// user, wrong password, unknown, expired or revoked robot, wrong secret.
// The causes are deliberately indistinguishable.
var ErrBadCredentials = errors.New("invalid username or password")

// Users holds the password hashes of configured and htpasswd users. It is
// immutable and safe for concurrent use.
type Users struct {
	hashes map[string][]byte
	// dummy is compared against for unknown users: generated once, at the
	// highest cost among the users, so an unknown user costs as much as
	// the most expensive known one.
	dummy []byte
	// fingerprints holds the credential fingerprints of the users whose
	// hash was made here from a password file (see passwordFingerprint).
	fingerprints map[string]string
}

// WeakCost is the bcrypt cost below which a hash is reported by Weak.
const WeakCost = 10

// NewUsers returns Users from bcrypt hashes keyed by name. It returns an
// error for a hash bcrypt cannot read.
func NewUsers(hashes map[string][]byte) (*Users, error) {
	u := &Users{hashes: map[string][]byte{}}
	cost := 0
	for name, h := range hashes {
		c, err := bcrypt.Cost(h)
		if err != nil {
			return nil, fmt.Errorf("user %s: not a bcrypt hash: %w", name, err)
		}
		cost = max(cost, c)
		u.hashes[name] = h
	}
	if len(hashes) == 0 {
		cost = bcrypt.DefaultCost
	}
	dummy, err := bcrypt.GenerateFromPassword([]byte("portcullis-unknown-user"), cost)
	if err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	u.dummy = dummy
	return u, nil
}

// Weak returns the users whose hashes have a bcrypt cost below WeakCost,
// sorted by name, with their costs.
func (u *Users) Weak() []WeakUser {
	var out []WeakUser
	for name, h := range u.hashes {
		if c, err := bcrypt.Cost(h); err == nil && c < WeakCost {
			out = append(out, WeakUser{Name: name, Cost: c})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// WeakUser is a user whose password hash is cheap to guess against.
type WeakUser struct {
	Name string
	Cost int
}

// LoadUsers reads the users of an auth configuration: inline bcrypt
// hashes, password files (hashed when read) and the htpasswd file. It
// returns an error naming the file or user that is wrong, and for a user
// defined twice.
func LoadUsers(cfg config.Auth) (*Users, error) {
	hashes := map[string][]byte{}
	fingerprints := map[string]string{}
	add := func(name string, h []byte) error {
		if _, dup := hashes[name]; dup {
			return fmt.Errorf("user %s defined twice", name)
		}
		if strings.ContainsAny(name, ":+") || name == "" {
			return fmt.Errorf("invalid user name %q", name)
		}
		hashes[name] = h
		return nil
	}
	for _, u := range cfg.Users {
		h := []byte(u.PasswordHash)
		if u.PasswordFile != "" {
			pw, err := os.ReadFile(u.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("user %s: read password file: %w", u.Name, err)
			}
			pw = bytes.TrimRight(pw, "\r\n")
			if len(pw) == 0 || len(pw) > 72 {
				return nil, fmt.Errorf("user %s: password file must hold 1 to 72 bytes", u.Name)
			}
			if h, err = bcrypt.GenerateFromPassword(pw, bcrypt.DefaultCost); err != nil {
				return nil, fmt.Errorf("user %s: hash password: %w", u.Name, err)
			}
			fingerprints[u.Name] = passwordFingerprint(u.Name, pw)
		}
		if err := add(u.Name, h); err != nil {
			return nil, err
		}
	}
	if cfg.HtpasswdFile != "" {
		data, err := os.ReadFile(cfg.HtpasswdFile)
		if err != nil {
			return nil, fmt.Errorf("read htpasswd file: %w", err)
		}
		entries, err := ParseHtpasswd(data)
		if err != nil {
			return nil, fmt.Errorf("htpasswd file %s: %w", cfg.HtpasswdFile, err)
		}
		for name, h := range entries {
			if err := add(name, h); err != nil {
				return nil, fmt.Errorf("htpasswd file %s: %w", cfg.HtpasswdFile, err)
			}
		}
	}
	users, err := NewUsers(hashes)
	if err != nil {
		return nil, err
	}
	users.fingerprints = fingerprints
	return users, nil
}

// ParseHtpasswd parses an htpasswd file of bcrypt entries (htpasswd -B).
// Blank lines and # comments are skipped. It returns an error naming the
// line of any other entry type (MD5, SHA1, crypt, plain text).
func ParseHtpasswd(data []byte) (map[string][]byte, error) {
	out := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("line %d: want NAME:HASH", n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("line %d (user %s): only bcrypt entries are supported (htpasswd -B)", n, name)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("line %d: user %s defined twice", n, name)
		}
		out[name] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read htpasswd: %w", err)
	}
	return out, nil
}

// Authenticate checks a user's password. It returns the credential
// fingerprint (which changes when the password does), or ErrBadCredentials.
// An unknown user costs the same bcrypt comparison as a known one.
func (u *Users) Authenticate(name, password string) (string, error) {
	h, ok := u.hashes[name]
	if !ok {
		_ = bcrypt.CompareHashAndPassword(u.dummy, []byte(password))
		return "", ErrBadCredentials
	}
	if bcrypt.CompareHashAndPassword(h, []byte(password)) != nil {
		return "", ErrBadCredentials
	}
	return u.fingerprint(name, h), nil
}

// fingerprint returns the credential fingerprint of a user whose hash is h.
func (u *Users) fingerprint(name string, h []byte) string {
	if f, ok := u.fingerprints[name]; ok {
		return f
	}
	return fingerprint(h)
}

// credential returns the current fingerprint of a user's password, for
// checking refresh tokens.
func (u *Users) credential(name string) (string, bool) {
	h, ok := u.hashes[name]
	if !ok {
		return "", false
	}
	return u.fingerprint(name, h), true
}

// Has reports whether the user exists.
func (u *Users) Has(name string) bool {
	_, ok := u.hashes[name]
	return ok
}

func fingerprint(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// passwordFingerprint is the credential fingerprint of a password read
// from a file. The bcrypt hash made of it at load has a random salt, so
// its fingerprint would differ between replicas and between restarts, and
// a refresh token (docker login's identity token) would work only on the
// process that issued it. This one is the same wherever the same password
// is read, and as costly to guess a password from as a bcrypt hash
// (Argon2id, with the user's name in the salt).
func passwordFingerprint(name string, password []byte) string {
	return fingerprint(argon2.IDKey(password, []byte("portcullis credential fingerprint\x00"+name), 2, 19*1024, 1, 32))
}
