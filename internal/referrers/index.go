package referrers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// rootPath is distribution's storage root; the index lives below it.
const rootPath = "/docker/registry/v2/repositories"

// Index stores, per repository and subject digest, the descriptors of the
// manifests that refer to that subject.
type Index struct {
	driver storagedriver.StorageDriver
}

// NewIndex returns an index kept in driver.
func NewIndex(driver storagedriver.StorageDriver) (*Index, error) {
	if driver == nil {
		return nil, errors.New("referrers index: nil storage driver")
	}
	return &Index{driver: driver}, nil
}

func repoDir(repo string) string { return path.Join(rootPath, repo, "_referrers") }

func subjectDir(repo string, subject digest.Digest) string {
	return path.Join(repoDir(repo), "subjects", string(subject.Algorithm()), subject.Encoded())
}

func entryPath(repo string, subject, referrer digest.Digest) string {
	return path.Join(subjectDir(repo, subject), string(referrer.Algorithm())+"-"+referrer.Encoded())
}

func completePath(repo string) string { return path.Join(repoDir(repo), "_complete") }

// Add records that referrer (described by desc) refers to subject.
func (x *Index) Add(ctx context.Context, repo string, subject digest.Digest, desc v1.Descriptor) error {
	if err := subject.Validate(); err != nil {
		return fmt.Errorf("add referrer: subject: %w", err)
	}
	data, err := json.Marshal(bound(desc))
	if err != nil {
		return fmt.Errorf("add referrer %s: %w", desc.Digest, err)
	}
	if err := x.driver.PutContent(ctx, entryPath(repo, subject, desc.Digest), data); err != nil {
		return fmt.Errorf("add referrer %s of %s: %w", desc.Digest, subject, err)
	}
	return nil
}

// Remove forgets that referrer refers to subject. Removing an entry that does
// not exist is not an error.
func (x *Index) Remove(ctx context.Context, repo string, subject, referrer digest.Digest) error {
	err := x.driver.Delete(ctx, entryPath(repo, subject, referrer))
	var nf storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &nf) {
		return fmt.Errorf("remove referrer %s of %s: %w", referrer, subject, err)
	}
	return nil
}

// List returns the descriptors of subject's referrers in repo, sorted by
// digest, each with its annotations bounded to MaxAnnotationBytes. A subject
// with no referrers (or that does not exist) gives an empty list.
func (x *Index) List(ctx context.Context, repo string, subject digest.Digest) ([]v1.Descriptor, error) {
	out := []v1.Descriptor{}
	_, err := x.Walk(ctx, repo, subject, "", func(d v1.Descriptor) bool {
		out = append(out, d)
		return true
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Walk calls fn with subject's referrers in repo in digest order, starting
// after the digest after ("" for the first), until fn returns false. It
// reads one entry at a time, so its memory does not grow with the number of
// referrers. fn returns false to stop before taking d; more then reports
// that d and perhaps others were left.
func (x *Index) Walk(ctx context.Context, repo string, subject digest.Digest, after digest.Digest, fn func(v1.Descriptor) bool) (more bool, err error) {
	dir := subjectDir(repo, subject)
	names, err := x.driver.List(ctx, dir)
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("list referrers of %s: %w", subject, err)
	}
	// Entry names are ALGORITHM-HEX, which sort as the digests do.
	sort.Strings(names)
	start := 0
	if after != "" {
		from := path.Join(dir, string(after.Algorithm())+"-"+after.Encoded())
		start = sort.Search(len(names), func(i int) bool { return names[i] > from })
	}
	for i := start; i < len(names); i++ {
		name := names[i]
		data, err := x.driver.GetContent(ctx, name)
		if errors.As(err, &nf) {
			continue // removed while we listed
		}
		if err != nil {
			return false, fmt.Errorf("read referrer entry %s: %w", path.Base(name), err)
		}
		var d v1.Descriptor
		if err := json.Unmarshal(data, &d); err != nil || d.Digest.Validate() != nil {
			continue // a torn or foreign file is not a referrer
		}
		if !strings.HasSuffix(name, string(d.Digest.Algorithm())+"-"+d.Digest.Encoded()) {
			continue
		}
		if !fn(bound(d)) {
			return true, nil
		}
	}
	return false, nil
}

// Complete reports whether repo's index has been built from its manifests.
func (x *Index) Complete(ctx context.Context, repo string) (bool, error) {
	_, err := x.driver.Stat(ctx, completePath(repo))
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat referrers marker: %w", err)
	}
	return true, nil
}

// MarkComplete records that repo's index covers all its manifests.
func (x *Index) MarkComplete(ctx context.Context, repo string) error {
	if err := x.driver.PutContent(ctx, completePath(repo), []byte("1")); err != nil {
		return fmt.Errorf("mark referrers index complete: %w", err)
	}
	return nil
}
