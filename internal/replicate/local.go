package replicate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/distribution/distribution/v3"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/portcullis/portcullis/internal/outbox"
	"github.com/portcullis/portcullis/replication"
	"github.com/portcullis/portcullis/scan/artifact"
)

// Repositories opens this registry's repositories in storage.
type Repositories interface {
	Repository(ctx context.Context, name reference.Named) (distribution.Repository, error)
}

// Catalog lists this registry's repositories.
type Catalog interface {
	Enumerate(ctx context.Context, ingester func(repo string) error) error
}

// ReferrerLister lists a subject's referrers in this registry.
type ReferrerLister interface {
	List(ctx context.Context, name string, subject digest.Digest) ([]v1.Descriptor, error)
}

// Events records the manifests a pull rule stores, as the front handler
// records pushes, for the scanner and replication.
type Events interface {
	Append(ctx context.Context, e outbox.Event) (uint64, error)
}

// Local is this registry's storage seen as a replication.Source (push
// rules read it) and a replication.Destination (pull rules write it).
type Local struct {
	Repos Repositories
	Refs  ReferrerLister
	// Events, when set, receives each manifest stored here.
	Events Events
	// Reserved are repositories this registry writes itself (its
	// vulnerability database): a pull never writes to them.
	Reserved []string
}

// reserved reports whether repo is one of l.Reserved.
func (l *Local) reserved(repo string) bool { return slices.Contains(l.Reserved, repo) }

// writable refuses writes to a reserved repository, for good.
func (l *Local) writable(what, repo string) error {
	if l.reserved(repo) {
		return &localError{fmt.Errorf("local %s: %w: %s is written by this registry only", what, replication.ErrDenied, repo)}
	}
	return nil
}

var (
	_ replication.Source      = (*Local)(nil)
	_ replication.Destination = (*Local)(nil)
)

// notFound reports whether err is one of distribution's "no such thing".
func notFound(err error) bool {
	var (
		repoUnknown     distribution.ErrRepositoryUnknown
		tagUnknown      distribution.ErrTagUnknown
		manifestUnknown distribution.ErrManifestUnknown
		revUnknown      distribution.ErrManifestUnknownRevision
		pathNotFound    storagedriver.PathNotFoundError
	)
	return errors.As(err, &repoUnknown) || errors.As(err, &tagUnknown) || errors.As(err, &manifestUnknown) ||
		errors.As(err, &revUnknown) || errors.As(err, &pathNotFound) ||
		errors.Is(err, distribution.ErrBlobUnknown)
}

// localError is a failure of this registry's storage.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

// wrap gives err the replication sentinel a copy tests for.
func wrap(what string, err error) error {
	if notFound(err) {
		return &localError{fmt.Errorf("local %s: %w: %w", what, replication.ErrNotFound, err)}
	}
	return &localError{fmt.Errorf("local %s: %w", what, err)}
}

// isLocal reports whether err came from this registry's storage.
func isLocal(err error) bool {
	var le *localError
	return errors.As(err, &le)
}

func (l *Local) open(ctx context.Context, repo string) (distribution.Repository, error) {
	named, err := reference.WithName(repo)
	if err != nil {
		return nil, fmt.Errorf("repository %q: %w", repo, err)
	}
	return l.Repos.Repository(ctx, named)
}

// resolve returns the digest ref names in r: a tag's target, or ref.
func resolve(ctx context.Context, r distribution.Repository, ref string) (digest.Digest, error) {
	if d, err := digest.Parse(ref); err == nil {
		return d, nil
	}
	desc, err := r.Tags(ctx).Get(ctx, ref)
	if err != nil {
		return "", err
	}
	return desc.Digest, nil
}

// GetManifest returns a manifest's bytes as stored.
func (l *Local) GetManifest(ctx context.Context, repo, ref string) (replication.Descriptor, []byte, error) {
	what := "get manifest " + repo + ":" + ref
	r, err := l.open(ctx, repo)
	if err != nil {
		return replication.Descriptor{}, nil, wrap(what, err)
	}
	d, err := resolve(ctx, r, ref)
	if err != nil {
		return replication.Descriptor{}, nil, wrap(what, err)
	}
	ms, err := r.Manifests(ctx)
	if err != nil {
		return replication.Descriptor{}, nil, wrap(what, err)
	}
	m, err := ms.Get(ctx, d)
	if err != nil {
		return replication.Descriptor{}, nil, wrap(what, err)
	}
	mt, body, err := m.Payload()
	if err != nil {
		return replication.Descriptor{}, nil, wrap(what, err)
	}
	return replication.Descriptor{MediaType: mt, Digest: d, Size: int64(len(body))}, body, nil
}

// HeadManifest says whether ref exists in repo and which digest it is.
func (l *Local) HeadManifest(ctx context.Context, repo, ref string) (replication.Descriptor, error) {
	what := "head manifest " + repo + ":" + ref
	r, err := l.open(ctx, repo)
	if err != nil {
		return replication.Descriptor{}, wrap(what, err)
	}
	d, err := resolve(ctx, r, ref)
	if err != nil {
		return replication.Descriptor{}, wrap(what, err)
	}
	ms, err := r.Manifests(ctx)
	if err != nil {
		return replication.Descriptor{}, wrap(what, err)
	}
	ok, err := ms.Exists(ctx, d)
	if err != nil {
		return replication.Descriptor{}, wrap(what, err)
	}
	if !ok {
		return replication.Descriptor{}, &localError{fmt.Errorf("local %s: %w", what, replication.ErrNotFound)}
	}
	return replication.Descriptor{Digest: d, Size: -1}, nil
}

// smallBlob is the size up to which GetBlob reads a blob whole: storage's
// streaming reader allocates a 4 MiB buffer for every blob it opens, which
// for a config or a small layer costs more than the blob.
const smallBlob = 1 << 20

// GetBlob opens a blob.
func (l *Local) GetBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, int64, error) {
	what := "get blob " + repo + "@" + string(d)
	r, err := l.open(ctx, repo)
	if err != nil {
		return nil, 0, wrap(what, err)
	}
	desc, err := r.Blobs(ctx).Stat(ctx, d)
	if err != nil {
		return nil, 0, wrap(what, err)
	}
	if desc.Size <= smallBlob {
		b, err := r.Blobs(ctx).Get(ctx, d)
		if err != nil {
			return nil, 0, wrap(what, err)
		}
		return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
	}
	rc, err := r.Blobs(ctx).Open(ctx, d)
	if err != nil {
		return nil, 0, wrap(what, err)
	}
	return rc, desc.Size, nil
}

// HeadBlob says whether repo has the blob d.
func (l *Local) HeadBlob(ctx context.Context, repo string, d digest.Digest) (replication.Descriptor, error) {
	what := "head blob " + repo + "@" + string(d)
	r, err := l.open(ctx, repo)
	if err != nil {
		return replication.Descriptor{}, wrap(what, err)
	}
	desc, err := r.Blobs(ctx).Stat(ctx, d)
	if err != nil {
		return replication.Descriptor{}, wrap(what, err)
	}
	return replication.Descriptor{MediaType: desc.MediaType, Digest: d, Size: desc.Size}, nil
}

// Referrers lists the referrers of d in repo.
func (l *Local) Referrers(ctx context.Context, repo string, d digest.Digest) ([]v1.Descriptor, error) {
	refs, err := l.Refs.List(ctx, repo, d)
	if err != nil {
		return nil, wrap("list referrers of "+repo+"@"+string(d), err)
	}
	return refs, nil
}

// Tags lists the tags of repo; none when it does not exist.
func (l *Local) Tags(ctx context.Context, repo string) ([]string, error) {
	r, err := l.open(ctx, repo)
	if err != nil {
		return nil, wrap("list tags of "+repo, err)
	}
	tags, err := r.Tags(ctx).All(ctx)
	if notFound(err) {
		return []string{}, nil
	}
	if err != nil {
		return nil, wrap("list tags of "+repo, err)
	}
	return tags, nil
}

// MountBlob does not mount: the copy uploads instead (storage dedupes
// blobs by digest anyway).
func (l *Local) MountBlob(context.Context, string, string, digest.Digest) (bool, error) {
	return false, nil
}

// UploadBlob stores a blob, verifying its digest.
func (l *Local) UploadBlob(ctx context.Context, repo string, d digest.Digest, size int64, body io.Reader) error {
	what := "upload blob " + repo + "@" + string(d)
	if err := l.writable(what, repo); err != nil {
		return err
	}
	r, err := l.open(ctx, repo)
	if err != nil {
		return wrap(what, err)
	}
	w, err := r.Blobs(ctx).Create(ctx)
	if err != nil {
		return wrap(what, err)
	}
	n, err := io.Copy(w, body)
	if err != nil {
		_ = w.Cancel(ctx)
		return &localError{fmt.Errorf("local %s: %w: %w", what, replication.ErrUnavailable, err)}
	}
	if _, err := w.Commit(ctx, distribution.Descriptor{Digest: d, Size: n, MediaType: "application/octet-stream"}); err != nil {
		_ = w.Cancel(ctx)
		return wrap(what, err)
	}
	return nil
}

// PutManifest stores a manifest by digest, or tags it.
func (l *Local) PutManifest(ctx context.Context, repo, ref, mediaType string, body []byte) (digest.Digest, error) {
	what := "put manifest " + repo + ":" + ref
	if err := l.writable(what, repo); err != nil {
		return "", err
	}
	r, err := l.open(ctx, repo)
	if err != nil {
		return "", wrap(what, err)
	}
	if t := artifact.ReservedIn(body); t != "" {
		// Only this registry's scanner writes these: content from a remote
		// is never taken for its own.
		return "", &localError{fmt.Errorf("local %s: %w: %s is reserved for the registry's scanner", what, replication.ErrDenied, t)}
	}
	m, desc, err := distribution.UnmarshalManifest(mediaType, body)
	if err != nil {
		return "", &localError{fmt.Errorf("local %s: %w", what, err)}
	}
	ms, err := r.Manifests(ctx)
	if err != nil {
		return "", wrap(what, err)
	}
	d, err := ms.Put(ctx, m)
	if err != nil {
		return "", wrap(what, err)
	}
	e := outbox.Event{Kind: outbox.KindPush, Repository: repo, Digest: d, MediaType: mediaType, Subject: subjectOf(body)}
	if _, err := digest.Parse(ref); err != nil {
		desc.Digest = d
		if err := r.Tags(ctx).Tag(ctx, ref, desc); err != nil {
			return "", wrap(what, err)
		}
		e.Kind, e.Tag = outbox.KindTag, ref
	}
	if l.Events != nil {
		// The content is stored; a lost event is repaired by the scanner's
		// reconcile pass, so it does not fail the copy.
		_, _ = l.Events.Append(ctx, e)
	}
	return d, nil
}

// subjectOf returns a manifest's subject, if it has one.
func subjectOf(body []byte) digest.Digest {
	var v struct {
		Subject *v1.Descriptor `json:"subject"`
	}
	if json.Unmarshal(body, &v) != nil || v.Subject == nil {
		return ""
	}
	return v.Subject.Digest
}

// DeleteTag removes a tag here (pull rules with deletes).
func (l *Local) DeleteTag(ctx context.Context, repo, tag string) error {
	if err := l.writable("delete tag "+repo+":"+tag, repo); err != nil {
		return err
	}
	r, err := l.open(ctx, repo)
	if err != nil {
		return wrap("delete tag "+repo+":"+tag, err)
	}
	if err := r.Tags(ctx).Untag(ctx, tag); err != nil && !notFound(err) {
		return wrap("delete tag "+repo+":"+tag, err)
	}
	return nil
}
