package replicate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// statusBucket holds the last failure of each image per rule, keyed
// rule NUL repository:tag.
var statusBucket = []byte("replication/status")

// Failure is the last failed copy of one image by one rule.
type Failure struct {
	Repository string        `json:"repository"`
	Tag        string        `json:"tag,omitempty"`
	Digest     digest.Digest `json:"digest,omitempty"`
	// Error is the destination's reason for a refusal, or what went wrong.
	Error string `json:"error"`
	// Permanent is true for a refusal that is not retried until the image
	// changes (a new tag target or a new signature).
	Permanent bool      `json:"permanent"`
	Since     time.Time `json:"since"`
	Last      time.Time `json:"last"`
	Attempts  int       `json:"attempts"`
}

// statusStore keeps failures in the metadata database (nil: in memory),
// and the last success per rule in memory.
type statusStore struct {
	db *bolt.DB
	mu sync.Mutex
	// mem holds failures without a database.
	mem         map[string]Failure
	lastSuccess map[string]time.Time
	lastRun     map[string]RunReport
}

func newStatusStore(db *bolt.DB) (*statusStore, error) {
	s := &statusStore{db: db, mem: map[string]Failure{}, lastSuccess: map[string]time.Time{}, lastRun: map[string]RunReport{}}
	if db != nil {
		if err := db.Update(func(tx *bolt.Tx) error {
			_, err := tx.CreateBucketIfNotExists(statusBucket)
			return err
		}); err != nil {
			return nil, fmt.Errorf("replication status: %w", err)
		}
	}
	return s, nil
}

func statusKey(rule, repo, tag string) string { return rule + "\x00" + repo + ":" + tag }

// fail records a failed copy.
func (s *statusStore) fail(rule string, f Failure) error {
	key := statusKey(rule, f.Repository, f.Tag)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		prev, ok := s.mem[key]
		s.mem[key] = merge(prev, ok, f)
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(statusBucket)
		var prev Failure
		ok := false
		if v := b.Get([]byte(key)); v != nil {
			ok = json.Unmarshal(v, &prev) == nil
		}
		data, err := json.Marshal(merge(prev, ok, f))
		if err != nil {
			return err
		}
		return b.Put([]byte(key), data)
	})
}

func merge(prev Failure, ok bool, f Failure) Failure {
	f.Attempts = 1
	f.Since = f.Last
	if ok && prev.Digest == f.Digest {
		f.Attempts = prev.Attempts + 1
		f.Since = prev.Since
	}
	return f
}

// ok clears the failure of an image and notes the rule's success.
func (s *statusStore) ok(rule, repo, tag string, now time.Time) error {
	key := statusKey(rule, repo, tag)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastSuccess[rule] = now
	if s.db == nil {
		delete(s.mem, key)
		return nil
	}
	// Most copies had no failure to clear: a read, not a write
	// transaction (a disk sync) per copy.
	failed := false
	if err := s.db.View(func(tx *bolt.Tx) error {
		failed = tx.Bucket(statusBucket).Get([]byte(key)) != nil
		return nil
	}); err != nil || !failed {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(statusBucket).Delete([]byte(key))
	})
}

// failure returns the recorded failure of an image.
func (s *statusStore) failure(rule, repo, tag string) (Failure, bool) {
	key := statusKey(rule, repo, tag)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		f, ok := s.mem[key]
		return f, ok
	}
	var f Failure
	ok := false
	_ = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(statusBucket).Get([]byte(key)); v != nil {
			ok = json.Unmarshal(v, &f) == nil
		}
		return nil
	})
	return f, ok
}

// failures returns the failures of rule, by repository and tag.
func (s *statusStore) failures(rule string) []Failure {
	prefix := []byte(rule + "\x00")
	out := []Failure{}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		for k, f := range s.mem {
			if bytes.HasPrefix([]byte(k), prefix) {
				out = append(out, f)
			}
		}
	} else {
		_ = s.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(statusBucket).Cursor()
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				var f Failure
				if json.Unmarshal(v, &f) == nil {
					out = append(out, f)
				}
			}
			return nil
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Repository != out[j].Repository {
			return out[i].Repository < out[j].Repository
		}
		return out[i].Tag < out[j].Tag
	})
	return out
}

func (s *statusStore) ran(rule string, r RunReport) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastRun[rule] = r
}

func (s *statusStore) summary(rule string) (time.Time, *RunReport) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.lastRun[rule]
	if !ok {
		return s.lastSuccess[rule], nil
	}
	return s.lastSuccess[rule], &r
}
