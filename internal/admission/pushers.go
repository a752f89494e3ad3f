package admission

import (
	"errors"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

var bucketPushers = []byte("admission/pushers")

// Pushers remembers, on this node, who pushed each manifest of a quarantine
// repository. It is node-local convenience: a pusher whose push landed on
// another replica is exempted through push permission instead.
type Pushers struct {
	db *bolt.DB
}

// NewPushers keeps pushers in db.
func NewPushers(db *bolt.DB) (*Pushers, error) {
	if db == nil {
		return nil, errors.New("pushers: nil database")
	}
	err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketPushers)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Pushers{db: db}, nil
}

func pusherKey(repo string, d digest.Digest) []byte { return []byte(repo + "@" + d.String()) }

// Record stores login as the pusher of repo@d.
func (p *Pushers) Record(repo string, d digest.Digest, login string) error {
	return p.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPushers).Put(pusherKey(repo, d), []byte(login))
	})
}

// Pusher returns who pushed repo@d, or "".
func (p *Pushers) Pusher(repo string, d digest.Digest) string {
	var login string
	_ = p.db.View(func(tx *bolt.Tx) error {
		login = string(tx.Bucket(bucketPushers).Get(pusherKey(repo, d)))
		return nil
	})
	return login
}
