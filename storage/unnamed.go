package storage

import (
	"context"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

// aliasWalks is how many listings of the aliases DeleteUnnamedData makes
// after listing the data objects. An alias moves by a copy, then a delete of
// its source: a listing that reaches the destination before the copy and the
// source after the delete misses it, the next one finds it at the
// destination.
const aliasWalks = 2

// DeleteUnnamedData removes the data objects that no alias names and that
// were last modified before before: what a process that died between
// storing an alias and completing its data, a Commit or Move that replaced
// an alias, or a delete that failed between an alias and its data left
// behind. It also removes the writer state of uploads that no longer exist
// (see deleteOrphanTails). It returns how many objects it removed and the
// bytes of the data objects.
//
// A data object that exists is named by an alias (Commit stores the alias
// first) until the alias is deleted or replaced, so listing the data objects
// first and then every alias, twice (see aliasWalks), finds each data object
// that is still named. before only spares the data of writers that stored
// their alias after completing it (a driver of an earlier version, during a
// rolling upgrade): give it a margin of an hour or more below the present,
// which also absorbs the skew between this process's clock and the object
// store's.
//
// When no data object is old enough it costs one listing of the data
// prefix; else a listing of the whole prefix per walk, and one HEAD request
// per object that may be an alias.
func (d *Driver) DeleteUnnamedData(ctx context.Context, before time.Time) (int, int64, error) {
	return d.d.deleteUnnamedData(ctx, before)
}

func (d *driver) deleteUnnamedData(ctx context.Context, before time.Time) (int, int64, error) {
	tails, err := d.deleteOrphanTails(ctx, before)
	if err != nil {
		return 0, 0, err
	}
	n, size, err := d.deleteUnnamedObjects(ctx, before)
	return tails + n, size, err
}

// deleteOrphanTails removes the pending tails of uploads whose directory is
// gone (their startedat with it), last modified before before, and aborts
// their multipart uploads. A request that resumed an upload stores its tail
// when it ends (Close): if another request deleted the upload in between (the
// client's DELETE, the PUT that committed it, the collector), the tail
// outlives its upload, and until this sweep a PATCH or PUT of that upload
// finds its state again (the digest is still checked at the commit).
//
// It costs one listing of the tails of uploads and, for each tail old enough,
// one HEAD of its startedat.
func (d *driver) deleteOrphanTails(ctx context.Context, before time.Time) (int, error) {
	var old []string
	for obj := range d.client.ListObjectsIter(ctx, d.bucket, minio.ListObjectsOptions{
		Prefix:    d.pendingKey(repositoriesRoot),
		Recursive: true,
	}) {
		if obj.Err != nil {
			return 0, translate("list upload tails", "/", obj.Err)
		}
		if path := "/" + strings.TrimPrefix(obj.Key, d.pendingRoot); isUploadData(path) && obj.LastModified.Before(before) {
			old = append(old, path)
		}
	}
	removed := 0
	for _, path := range old {
		dir, _, _ := uploadDir(path)
		_, err := d.client.StatObject(ctx, d.bucket, d.key(dir+"/startedat"), minio.StatObjectOptions{})
		if err == nil {
			continue // the upload exists: its tail is its state
		}
		if !isNotFound(err) {
			return removed, translate("stat startedat", dir, err)
		}
		n, err := d.deletePending(ctx, path)
		if err != nil {
			return removed, err
		}
		removed += n
	}
	return removed, nil
}

// deleteUnnamedObjects removes the data objects that no alias names and
// that were last modified before before.
func (d *driver) deleteUnnamedObjects(ctx context.Context, before time.Time) (int, int64, error) {
	candidates := map[string]int64{}
	for obj := range d.client.ListObjectsIter(ctx, d.bucket, minio.ListObjectsOptions{
		Prefix:    d.pendingRoot + dataDir + "/",
		Recursive: true,
	}) {
		if obj.Err != nil {
			return 0, 0, translate("list data", "/", obj.Err)
		}
		if d.isDataKey(obj.Key) && obj.LastModified.Before(before) {
			candidates[obj.Key] = obj.Size
		}
	}
	for range aliasWalks {
		if len(candidates) == 0 {
			return 0, 0, nil
		}
		if err := d.unnameAliased(ctx, candidates); err != nil {
			return 0, 0, translate("list aliases", "/", err)
		}
	}
	if len(candidates) == 0 {
		return 0, 0, nil
	}
	keys := make([]string, 0, len(candidates))
	var size int64
	for k, n := range candidates {
		keys = append(keys, k)
		size += n
	}
	if err := d.removeKeys(ctx, keys); err != nil {
		return 0, 0, translate("delete unnamed data", "/", err)
	}
	return len(keys), size, nil
}

// unnameAliased lists every object under the prefix that can be an alias
// and removes from candidates the data objects the aliases name.
func (d *driver) unnameAliased(ctx context.Context, candidates map[string]int64) error {
	for obj := range d.client.ListObjectsIter(ctx, d.bucket, minio.ListObjectsOptions{
		Prefix:    d.root,
		Recursive: true,
	}) {
		if obj.Err != nil {
			return obj.Err
		}
		if obj.Key >= d.pendingRoot {
			// Writer state and what sorts after it: no driver path
			// reaches there ('~' is past every character of a path).
			return nil
		}
		if !maybeAlias(obj.Key, obj.Size) {
			continue
		}
		a, ok, err := d.statAliasOrPlain(ctx, obj.Key)
		if err != nil {
			return err
		}
		if ok {
			delete(candidates, a.key)
		}
	}
	return nil
}
