package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7"
)

// Metadata of an alias object, as minio-go sends and returns it.
const (
	metaAliasOf   = "Portcullis-Alias-Of"
	metaAliasSize = "Portcullis-Alias-Size"
)

// dataDir is the key segment, under the pending prefix, of the objects that
// hold the data of large committed writers. Aliases name them.
const dataDir = "~data"

// aliasBody is the content of every alias object. Its length lets Walk tell
// an object that may be an alias from one that cannot be without a request.
var aliasBody = []byte("portcullis alias: the data is at the key in this object's metadata\n")

// newDataKey returns a fresh key for the data of a large writer.
func (d *driver) newDataKey() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("data key: %w", err)
	}
	return d.pendingRoot + dataDir + "/" + hex.EncodeToString(b[:]), nil
}

// isDataKey reports whether key names a data object: what an alias may
// point at, and nothing else.
func (d *driver) isDataKey(key string) bool {
	rest, ok := strings.CutPrefix(key, d.pendingRoot+dataDir+"/")
	return ok && rest != "" && !strings.Contains(rest, "/")
}

// alias is where an alias object's data lives.
type alias struct {
	key  string // the data object
	size int64
}

// errMalformedAlias is returned by reads of an object whose alias metadata
// is incomplete or names a key outside the data prefix. Such an object was
// not written by the driver: reads refuse it, Walk reports it as it is, and
// deletes remove it without following it.
var errMalformedAlias = errors.New("malformed alias object")

// aliasOf returns the alias that an object's metadata records, if any. An
// object whose metadata names a key outside the data prefix is an error, not
// an alias to follow.
func (d *driver) aliasOf(meta http.Header) (alias, bool, error) {
	target := meta.Get(headerMetaPrefix + metaAliasOf)
	if target == "" {
		return alias{}, false, nil
	}
	key := d.root + target
	size, err := strconv.ParseInt(meta.Get(headerMetaPrefix+metaAliasSize), 10, 64)
	if err != nil || size < 0 || !d.isDataKey(key) {
		return alias{}, false, errMalformedAlias
	}
	return alias{key: key, size: size}, true, nil
}

// putAlias stores at key an alias of the data object a.
func (d *driver) putAlias(ctx context.Context, key string, a alias) error {
	_, err := d.putObject(ctx, key, aliasBody,
		minio.PutObjectOptions{
			ContentType:      contentType,
			DisableMultipart: true,
			UserMetadata: map[string]string{
				metaAliasOf:   strings.TrimPrefix(a.key, d.root),
				metaAliasSize: strconv.FormatInt(a.size, 10),
			},
		})
	return err
}

// statAlias returns the alias stored at key, if the object there is one.
// A missing object is not an error.
func (d *driver) statAlias(ctx context.Context, key string) (alias, bool, error) {
	info, err := d.client.StatObject(ctx, d.bucket, key, minio.StatObjectOptions{})
	if isNotFound(err) {
		return alias{}, false, nil
	}
	if err != nil {
		return alias{}, false, err
	}
	return d.aliasOf(info.Metadata)
}

// statAliasOrPlain is statAlias for Walk and deletes: a malformed alias is
// an object like any other.
func (d *driver) statAliasOrPlain(ctx context.Context, key string) (alias, bool, error) {
	a, ok, err := d.statAlias(ctx, key)
	if errors.Is(err, errMalformedAlias) {
		return alias{}, false, nil
	}
	return a, ok, err
}

// aliasName is the last segment of every path that can hold an alias:
// distribution's blob data and upload data. A Writer on another path sends
// its parts to its own key, and Move of an alias to another path copies the
// data, so deletes and walks know without a request that such a path holds
// no alias (links, manifests' revisions, tombstones).
const aliasName = "data"

// canAlias reports whether the path or key p may hold an alias.
func canAlias(p string) bool {
	return path.Base(p) == aliasName
}

// maybeAlias reports whether an object at key of this size, as a listing
// shows it, can be an alias.
func maybeAlias(key string, size int64) bool {
	return size == int64(len(aliasBody)) && canAlias(key)
}

// isBlobData reports whether path is the data of a blob in distribution's
// layout, whose content its digest fixes (not an upload's data, which a
// later commit may replace).
func isBlobData(path string) bool {
	return canAlias(path) && !strings.Contains(path, "/_uploads/")
}
