package token

import (
	"context"
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
)

// ErrRefreshNotFound is returned by Refreshes.Get and Revoke for a token
// id that was never recorded, was revoked, or has expired and been pruned.
var ErrRefreshNotFound = errors.New("refresh token not found")

// RefreshRecord is what the registry keeps of an issued refresh token: its
// id (the jti claim), whose it is and when it expires; never the token.
// A refresh token is valid only while its record exists.
type RefreshRecord struct {
	ID string `json:"id"`
	// Subject is the login: a user name, or robot+NAME.
	Subject   string    `json:"subject"`
	IssuedAt  time.Time `json:"issuedAt"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// RefreshesOptions configures Refreshes. Zero values mean the defaults.
type RefreshesOptions struct {
	// Dir is the storage directory of the records; default
	// /portcullis/tokens.
	Dir string
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Refreshes records issued refresh tokens in a Store (the storage
// backend, so a revocation on one replica holds on every replica at once:
// each use of a refresh token reads its record, nothing is cached). It is
// safe for concurrent use.
//
// Layout: DIR/<id>.json, one small JSON RefreshRecord per token.
type Refreshes struct {
	store Store
	opts  RefreshesOptions
}

// NewRefreshes returns Refreshes stored in store. It returns an error for
// a nil store or a relative directory.
func NewRefreshes(store Store, opts RefreshesOptions) (*Refreshes, error) {
	if store == nil {
		return nil, errors.New("refresh tokens: no store")
	}
	if opts.Dir == "" {
		opts.Dir = "/portcullis/tokens"
	}
	if !strings.HasPrefix(opts.Dir, "/") {
		return nil, fmt.Errorf("refresh tokens: directory %q must be absolute", opts.Dir)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Refreshes{store: store, opts: opts}, nil
}

// refreshIDRE is the syntax of token ids (newID: 128 random bits in hex).
var refreshIDRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[0-9a-f]{32}$`) })

func (rf *Refreshes) path(id string) string { return path.Join(rf.opts.Dir, id+".json") }

// record stores the record of a newly issued refresh token. It returns an
// error for a malformed id or a storage failure.
func (rf *Refreshes) record(ctx context.Context, r RefreshRecord) error {
	if !refreshIDRE().MatchString(r.ID) {
		return fmt.Errorf("record refresh token: invalid id %q", r.ID)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode refresh token record: %w", err)
	}
	if err := rf.store.PutContent(ctx, rf.path(r.ID), data); err != nil {
		return fmt.Errorf("record refresh token %s: %w", r.ID, err)
	}
	return nil
}

// Get returns the record of a token id. It returns ErrRefreshNotFound for
// an unknown or revoked id; other errors are storage failures.
func (rf *Refreshes) Get(ctx context.Context, id string) (RefreshRecord, error) {
	if !refreshIDRE().MatchString(id) {
		return RefreshRecord{}, fmt.Errorf("refresh token %q: %w", id, ErrRefreshNotFound)
	}
	data, err := rf.store.GetContent(ctx, rf.path(id))
	if err != nil {
		if errors.As(err, new(storagedriver.PathNotFoundError)) {
			return RefreshRecord{}, fmt.Errorf("refresh token %s: %w", id, ErrRefreshNotFound)
		}
		return RefreshRecord{}, fmt.Errorf("read refresh token %s: %w", id, err)
	}
	var r RefreshRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return RefreshRecord{}, fmt.Errorf("decode refresh token %s: %w", id, err)
	}
	return r, nil
}

// List returns the records of unexpired refresh tokens, of one subject
// (user name or robot+NAME) or of all when subject is empty, sorted by
// subject and issue time. It deletes the records of expired tokens it
// comes across.
func (rf *Refreshes) List(ctx context.Context, subject string) ([]RefreshRecord, error) {
	paths, err := rf.store.List(ctx, rf.opts.Dir)
	if err != nil {
		if errors.As(err, new(storagedriver.PathNotFoundError)) {
			return nil, nil
		}
		return nil, fmt.Errorf("list refresh tokens: %w", err)
	}
	now := rf.opts.Now()
	var out []RefreshRecord
	for _, p := range paths {
		id, ok := strings.CutSuffix(path.Base(p), ".json")
		if !ok {
			continue
		}
		r, err := rf.Get(ctx, id)
		if errors.Is(err, ErrRefreshNotFound) {
			continue // revoked between List and Get
		}
		if err != nil {
			return nil, err
		}
		if !now.Before(r.ExpiresAt) {
			if err := rf.delete(ctx, id); err != nil && !errors.Is(err, ErrRefreshNotFound) {
				return nil, err
			}
			continue
		}
		if subject == "" || r.Subject == subject {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Subject != out[j].Subject {
			return out[i].Subject < out[j].Subject
		}
		return out[i].IssuedAt.Before(out[j].IssuedAt)
	})
	return out, nil
}

// Revoke deletes the record of one token id: the token stops working at
// once on every replica. It returns ErrRefreshNotFound for an unknown id.
func (rf *Refreshes) Revoke(ctx context.Context, id string) error {
	if _, err := rf.Get(ctx, id); err != nil {
		return err
	}
	return rf.delete(ctx, id)
}

// RevokeSubject revokes every refresh token of a subject (user name or
// robot+NAME), or of everyone when subject is empty, and returns how many
// it revoked.
func (rf *Refreshes) RevokeSubject(ctx context.Context, subject string) (int, error) {
	list, err := rf.List(ctx, subject)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range list {
		if err := rf.delete(ctx, r.ID); err != nil && !errors.Is(err, ErrRefreshNotFound) {
			return n, err
		}
		n++
	}
	return n, nil
}

func (rf *Refreshes) delete(ctx context.Context, id string) error {
	if err := rf.store.Delete(ctx, rf.path(id)); err != nil {
		if errors.As(err, new(storagedriver.PathNotFoundError)) {
			return fmt.Errorf("refresh token %s: %w", id, ErrRefreshNotFound)
		}
		return fmt.Errorf("revoke refresh token %s: %w", id, err)
	}
	return nil
}
