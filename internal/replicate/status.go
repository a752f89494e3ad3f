package replicate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
)

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

// maxFailuresRead bounds the failure records read for one rule's status.
const maxFailuresRead = 1000

// statusStore keeps each rule's failures, one object per image, and its
// last run in the storage backend, so that every replica over the bucket
// sees them:
//
//	<leaseRoot>/<rule>/failures/<sha256 of repository:tag>.json
//	<leaseRoot>/<rule>/lastrun.json
//
// The last success of each rule is this replica's own, in memory.
type statusStore struct {
	driver      storagedriver.StorageDriver
	mu          sync.Mutex
	lastSuccess map[string]time.Time
}

func newStatusStore(driver storagedriver.StorageDriver) *statusStore {
	return &statusStore{driver: driver, lastSuccess: map[string]time.Time{}}
}

func failuresDir(rule string) string { return leaseRoot + "/" + rule + "/failures" }

func failurePath(rule, repo, tag string) string {
	sum := sha256.Sum256([]byte(repo + ":" + tag))
	return failuresDir(rule) + "/" + hex.EncodeToString(sum[:]) + ".json"
}

func isNotFound(err error) bool {
	var nf storagedriver.PathNotFoundError
	return errors.As(err, &nf)
}

// fail records a failed copy, counting the attempts at the same digest.
func (s *statusStore) fail(ctx context.Context, rule string, f Failure) error {
	p := failurePath(rule, f.Repository, f.Tag)
	prev, ok, err := s.read(ctx, p)
	if err != nil {
		return err
	}
	f.Attempts, f.Since = 1, f.Last
	if ok && prev.Digest == f.Digest {
		f.Attempts, f.Since = prev.Attempts+1, prev.Since
	}
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if err := s.driver.PutContent(ctx, p, data); err != nil {
		return fmt.Errorf("record replication failure: %w", err)
	}
	return nil
}

// read returns the failure stored at p; ok is false when there is none
// (or it cannot be decoded).
func (s *statusStore) read(ctx context.Context, p string) (f Failure, ok bool, err error) {
	b, err := s.driver.GetContent(ctx, p)
	if isNotFound(err) {
		return Failure{}, false, nil
	}
	if err != nil {
		return Failure{}, false, fmt.Errorf("read replication failure: %w", err)
	}
	return f, json.Unmarshal(b, &f) == nil, nil
}

// ok clears the failure of an image, whichever replica recorded it, and
// notes the rule's success.
func (s *statusStore) ok(ctx context.Context, rule, repo, tag string, now time.Time) error {
	s.mu.Lock()
	s.lastSuccess[rule] = now
	s.mu.Unlock()
	if err := s.driver.Delete(ctx, failurePath(rule, repo, tag)); err != nil && !isNotFound(err) {
		return fmt.Errorf("clear replication failure: %w", err)
	}
	return nil
}

// failures returns the failures of rule, by repository and tag (at most
// maxFailuresRead of them).
func (s *statusStore) failures(ctx context.Context, rule string) ([]Failure, error) {
	paths, err := s.driver.List(ctx, failuresDir(rule))
	if isNotFound(err) {
		return []Failure{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list replication failures: %w", err)
	}
	sort.Strings(paths)
	out := []Failure{}
	for _, p := range paths[:min(len(paths), maxFailuresRead)] {
		if path.Ext(p) != ".json" {
			continue
		}
		f, ok, err := s.read(ctx, p)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, f)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Repository != out[j].Repository {
			return out[i].Repository < out[j].Repository
		}
		return out[i].Tag < out[j].Tag
	})
	return out, nil
}

func lastRunPath(rule string) string { return leaseRoot + "/" + rule + "/lastrun.json" }

// ran records the report of a rule's run.
func (s *statusStore) ran(ctx context.Context, rule string, r RunReport) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := s.driver.PutContent(ctx, lastRunPath(rule), data); err != nil {
		return fmt.Errorf("record replication run: %w", err)
	}
	return nil
}

// summary returns this replica's last success of rule and the last run of
// the rule by any replica.
func (s *statusStore) summary(ctx context.Context, rule string) (time.Time, *RunReport) {
	s.mu.Lock()
	last := s.lastSuccess[rule]
	s.mu.Unlock()
	b, err := s.driver.GetContent(ctx, lastRunPath(rule))
	if err != nil {
		return last, nil
	}
	var r RunReport
	if json.Unmarshal(b, &r) != nil {
		return last, nil
	}
	return last, &r
}

// failure returns the recorded failure of an image; ok is false when there
// is none or it cannot be read.
func (s *statusStore) failure(ctx context.Context, rule, repo, tag string) (Failure, bool) {
	f, ok, err := s.read(ctx, failurePath(rule, repo, tag))
	return f, ok && err == nil
}
