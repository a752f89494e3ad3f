package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/minio/minio-go/v7"
)

// Metadata of a pending tail object, as minio-go sends and returns it.
const (
	metaUploadID     = "Portcullis-Upload-Id"
	metaOffset       = "Portcullis-Offset"
	metaDataKey      = "Portcullis-Data-Key"
	headerMetaPrefix = "X-Amz-Meta-"
)

var (
	errClosed    = errors.New("writer already closed")
	errCommitted = errors.New("writer already committed")
	errCancelled = errors.New("writer already cancelled")
)

// Writer returns a FileWriter for path. With append false it starts empty and
// replaces path on Commit. With append true it resumes the uncommitted writer
// a previous Close left on path, or appends to an empty committed object; it
// returns storagedriver.PathNotFoundError when there is neither, and an error
// for a committed object that is not empty.
//
// An upload's data (…/_uploads/<id>/data) is the exception: a writer there
// that has written nothing leaves no state when it is closed, so append true
// with no state resumes an empty writer. The upload exists if its startedat
// does, which distribution reads first; the offset in the client's upload
// state catches a writer whose state was lost after data was written.
func (d *driver) Writer(ctx context.Context, path string, appendMode bool) (storagedriver.FileWriter, error) {
	// What this request read of the writer state with the upload's
	// startedat (see startedAt); not after a commit this process holds,
	// which settle is about to store or remove.
	var read *resumeRead
	if rec := requestOf(ctx); rec != nil && isUploadData(path) {
		read = rec.takeResume(path)
	}
	settled := d.held.get(path) != nil
	if settled {
		read = nil
	}
	if err := d.settle(ctx, path, nil); err != nil {
		return nil, err
	}
	d.commits.forget(path)
	d.stated.forget(path)
	w := &writer{
		d:       d,
		ctx:     ctx,
		path:    path,
		key:     d.key(path),
		dataKey: d.key(path),
		tailKey: d.pendingKey(path),
		alias:   canAlias(path),
	}
	if appendMode {
		if err := w.resume(ctx, read); err != nil {
			return nil, err
		}
	}
	if isUploadData(path) {
		switch {
		case settled:
			// The upload's directory holds what the settled commit
			// left, which no list names.
			w.states = hashStates{}
		case !appendMode:
			w.states = hashStates{known: true} // a new upload
		}
		d.writers.add(w, w.storedHash, w.states)
	}
	return w, nil
}

// writer is a storagedriver.FileWriter that keeps what it has not yet sent in
// buf, never more than partSize bytes, sends each full buffer as a part of a
// multipart upload, and on Close stores what remains as the pending tail.
type writer struct {
	d *driver
	// ctx is the context of the Writer call. io.Writer and io.Closer take
	// none, so Write uses it and Close uses it without its cancellation.
	ctx  context.Context
	path string
	key  string // the object at path
	// dataKey is the key of the multipart upload: a fresh data object,
	// which Commit makes key an alias of, or key itself for an upload a
	// writer without data objects started.
	dataKey string
	tailKey string // the pending tail object
	// alias is whether the path may hold an alias: only then do parts go
	// to a fresh data object.
	alias bool

	uploadID  string // "" until the first part is sent
	parts     []minio.CompletePart
	partsSize int64
	buf       []byte
	pooled    *[]byte // buf's backing array when it came from the driver's pool
	released  int64   // bytes buf held when it was released

	tailStored bool // the tail object holds buf, uploadID and partsSize
	// storedHash is the hash state the tail object holds, if any: upload
	// data only (see dropHashState).
	storedHash *hashState
	// startedAt is the content of the upload's startedat, which the tail
	// of upload data carries (see startedAt); "" when unknown.
	startedAt string
	// states lists the hash states stored for the upload as resumed (see
	// hashStates).
	states hashStates

	closed, committed, cancelled bool
}

// resume loads the state a previous writer on the same path left: read,
// when the request read it already, else its pending tail.
func (w *writer) resume(ctx context.Context, read *resumeRead) error {
	if read == nil {
		var err error
		if read, err = w.d.readTail(ctx, w.path); err != nil {
			return err
		}
	}
	w.startedAt = read.startedAt
	if !read.found {
		if isUploadData(w.path) {
			w.states = hashStates{known: true}
			return nil // nothing written yet
		}
		return w.resumeCommitted(ctx)
	}
	meta := read.meta
	w.states = hashStatesOf(meta.Get(headerMetaPrefix + metaHashStates))

	w.uploadID = meta.Get(headerMetaPrefix + metaUploadID)
	if k := meta.Get(headerMetaPrefix + metaDataKey); k != "" {
		if !w.d.isDataKey(w.d.root + k) {
			return fmt.Errorf("open writer %s: pending tail names a data key outside the data prefix", w.path)
		}
		w.dataKey = w.d.root + k
	}
	offset, err := strconv.ParseInt(meta.Get(headerMetaPrefix+metaOffset), 10, 64)
	if err != nil {
		return fmt.Errorf("open writer %s: pending tail has no valid offset: %w", w.path, err)
	}
	if w.uploadID != "" {
		if err := w.listParts(ctx); err != nil {
			return err
		}
	}
	switch {
	case offset == w.partsSize:
		w.buf = read.body // < MinPartSize: Close sends more as a part
		w.tailStored = true
	case offset < w.partsSize:
		// A part was sent after the tail was stored, by a writer that did
		// not get to Close: that part begins with the tail.
	default:
		return fmt.Errorf("open writer %s: pending tail starts at %d but the upload holds %d bytes", w.path, offset, w.partsSize)
	}
	if h, ok := hashStateOf(meta.Get); ok && h.offset == w.Size() && isUploadData(w.path) {
		w.storedHash = h
	}
	return nil
}

// resumeCommitted opens a writer on a path without writer state: allowed
// only for an empty committed object, which it will replace.
func (w *writer) resumeCommitted(ctx context.Context) error {
	info, err := w.d.client.StatObject(ctx, w.d.bucket, w.key, minio.StatObjectOptions{})
	if err != nil {
		return translate("open writer", w.path, err)
	}
	if info.Size > 0 {
		return fmt.Errorf("open writer %s: append to a committed object of %d bytes is not supported", w.path, info.Size)
	}
	return nil
}

// listParts loads the parts of w.uploadID, 1000 per request.
func (w *writer) listParts(ctx context.Context) error {
	core := minio.Core{Client: w.d.client}
	marker := 0
	for {
		res, err := core.ListObjectParts(ctx, w.d.bucket, w.dataKey, w.uploadID, marker, 1000)
		if errorCode(err) == codeNoSuchUpload {
			return fmt.Errorf("open writer %s: multipart upload %s is gone", w.path, w.uploadID)
		}
		if err != nil {
			return translate("open writer: list parts", w.path, err)
		}
		for _, p := range res.ObjectParts {
			w.parts = append(w.parts, minio.CompletePart{PartNumber: p.PartNumber, ETag: p.ETag})
			w.partsSize += p.Size
		}
		if !res.IsTruncated {
			break
		}
		marker = res.NextPartNumberMarker
	}
	slices.SortFunc(w.parts, func(a, b minio.CompletePart) int { return a.PartNumber - b.PartNumber })
	for i, p := range w.parts {
		if p.PartNumber != i+1 {
			return fmt.Errorf("open writer %s: multipart upload %s lacks part %d", w.path, w.uploadID, i+1)
		}
	}
	return nil
}

func (w *writer) usable() error {
	switch {
	case w.closed:
		return errClosed
	case w.committed:
		return errCommitted
	case w.cancelled:
		return errCancelled
	}
	return nil
}

// Write buffers p and sends every buffer that reaches the part size.
func (w *writer) Write(p []byte) (int, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	n := 0
	for len(p) > 0 {
		if int64(len(w.buf)) >= w.d.partSize {
			if err := w.sendPart(w.ctx); err != nil {
				return n, err
			}
		}
		chunk := p[:min(int64(len(p)), w.d.partSize-int64(len(w.buf)))]
		w.grow(len(chunk))
		w.buf = append(w.buf, chunk...)
		w.tailStored = false
		n += len(chunk)
		p = p[len(chunk):]
	}
	if int64(len(w.buf)) >= w.d.partSize {
		if err := w.sendPart(w.ctx); err != nil {
			return n, err
		}
	}
	return n, nil
}

// grow makes room for n more bytes in buf, never past the part size unless
// a resumed tail already is.
//
// Small blobs (manifests, configs) grow a buffer of their own; past
// smallBuffer the writer takes a whole part-size buffer from the driver's
// pool, so a large upload holds one part's memory, not a doubling series.
func (w *writer) grow(n int) {
	need := len(w.buf) + n
	if need <= cap(w.buf) {
		return
	}
	if size := max(2*cap(w.buf), need, 64<<10); size <= smallBuffer || w.pooled != nil {
		buf := make([]byte, len(w.buf), min(max(size, need), max(int(w.d.partSize), need)))
		copy(buf, w.buf)
		w.buf = buf
		return
	}
	bp := w.d.parts.Get().(*[]byte)
	buf := (*bp)[:len(w.buf)]
	copy(buf, w.buf)
	w.buf, w.pooled = buf, bp
}

// smallBuffer is the largest buffer a writer grows by itself.
const smallBuffer = 1 << 20

// release returns the writer's buffer to the pool; the writer is done.
// Size still counts what the buffer held.
func (w *writer) release() {
	w.released += int64(len(w.buf))
	if w.pooled != nil {
		*w.pooled = (*w.pooled)[:0]
		w.d.parts.Put(w.pooled)
		w.pooled = nil
	}
	w.buf = nil
}

// sendPart sends buf as the next part, starting the multipart upload first if
// there is none.
func (w *writer) sendPart(ctx context.Context) error {
	core := minio.Core{Client: w.d.client}
	if w.uploadID == "" {
		dataKey := w.key
		if w.alias {
			k, err := w.d.newDataKey()
			if err != nil {
				return err
			}
			dataKey = k
		}
		id, err := core.NewMultipartUpload(ctx, w.d.bucket, dataKey, minio.PutObjectOptions{ContentType: contentType})
		if err != nil {
			return translate("write: start upload", w.path, err)
		}
		w.uploadID, w.dataKey = id, dataKey
	}
	number := len(w.parts) + 1
	// Unsigned payload: over https minio-go sends parts so already; over
	// plain http it would otherwise hash every byte for a streaming
	// signature, and a plain-http endpoint authenticates no response body
	// either. The registry checks each blob's digest as it receives it.
	part, err := core.PutObjectPart(ctx, w.d.bucket, w.dataKey, w.uploadID, number,
		bytes.NewReader(w.buf), int64(len(w.buf)), minio.PutObjectPartOptions{DisableContentSha256: true})
	if err != nil {
		return translate(fmt.Sprintf("write: part %d", number), w.path, err)
	}
	w.parts = append(w.parts, minio.CompletePart{PartNumber: number, ETag: part.ETag})
	w.partsSize += int64(len(w.buf))
	w.buf = w.buf[:0]
	w.tailStored = false
	return nil
}

// Size returns the number of bytes written, including those resumed.
func (w *writer) Size() int64 {
	return w.partsSize + int64(len(w.buf)) + w.released
}

// Close saves the writer's state so that Writer with append true resumes it:
// a buffer of at least MinPartSize becomes a part, a smaller one the pending
// tail. After Commit or Cancel there is nothing to save.
func (w *writer) Close() error {
	if w.closed {
		return errClosed
	}
	w.closed = true
	if w.committed || w.cancelled {
		return nil
	}
	err := w.save()
	noteWriteFailure(w.ctx, err)
	return err
}

// save stores what Close must keep: the last part, the pending tail.
func (w *writer) save() error {
	defer w.release()
	hash := w.d.writers.hashOf(w)
	states := w.d.writers.statesOf(w)
	defer w.d.writers.remove(w)
	if hash != nil && hash.offset != w.Size() {
		hash = nil
	}
	ctx := context.WithoutCancel(w.ctx)
	if len(w.buf) >= MinPartSize {
		if err := w.sendPart(ctx); err != nil {
			return err
		}
	}
	if w.tailStored && hash.equal(w.storedHash) && states.meta() == w.states.meta() || w.uploadID == "" && len(w.buf) == 0 && isUploadData(w.path) {
		// Nothing new to save, or an upload with nothing written: its
		// next writer resumes empty without state (see Writer).
		return nil
	}
	meta := map[string]string{
		metaUploadID: w.uploadID,
		metaOffset:   strconv.FormatInt(w.partsSize, 10),
	}
	if hash != nil {
		maps.Copy(meta, hash.meta())
	}
	if w.dataKey != w.key {
		meta[metaDataKey] = strings.TrimPrefix(w.dataKey, w.d.root)
	}
	if w.startedAt != "" && storableMeta(w.startedAt) {
		meta[metaStartedAt] = w.startedAt
	}
	if v := states.meta(); v != "" && isUploadData(w.path) {
		meta[metaHashStates] = v
	}
	_, err := w.d.putObject(ctx, w.tailKey, w.buf,
		minio.PutObjectOptions{ContentType: contentType, DisableMultipart: true, UserMetadata: meta})
	if err != nil {
		return translate("close: store tail", w.path, err)
	}
	w.tailStored, w.storedHash, w.states = true, hash, states
	return nil
}

// Commit makes everything written readable at the path: it completes the
// multipart upload with what is buffered as the last part or, when no part
// was sent, puts the buffer as the object. Then it removes the pending tail.
func (w *writer) Commit(ctx context.Context) error {
	if err := w.usable(); err != nil {
		return err
	}
	hash := w.d.writers.hashOf(w)
	states := w.d.writers.statesOf(w)
	w.d.writers.remove(w)
	if hash != nil && hash.offset != w.Size() {
		hash = nil
	}
	if w.hold(hash, states) {
		w.committed = true
		w.partsSize += int64(len(w.buf))
		w.buf = nil
		w.release()
		return nil
	}
	var put minio.UploadInfo
	if w.uploadID == "" {
		var err error
		put, err = w.d.putObject(ctx, w.key, w.buf,
			minio.PutObjectOptions{ContentType: contentType, DisableMultipart: true})
		if err != nil {
			return translate("commit", w.path, err)
		}
	} else {
		if len(w.buf) > 0 || len(w.parts) == 0 {
			if err := w.sendPart(ctx); err != nil {
				return err
			}
		}
		aliased := w.dataKey != w.key
		if aliased {
			// The alias before its data: a data object exists only once
			// an alias names it, which DeleteUnnamedData relies on.
			if err := w.d.putAlias(ctx, w.key, alias{key: w.dataKey, size: w.partsSize}); err != nil {
				return translate("commit: store alias", w.path, err)
			}
		}
		core := minio.Core{Client: w.d.client}
		err := retryDenied(ctx, func() error {
			_, err := core.CompleteMultipartUpload(ctx, w.d.bucket, w.dataKey, w.uploadID, w.parts, minio.PutObjectOptions{})
			return err
		})
		if err != nil {
			if aliased {
				// It names no data.
				_ = w.d.client.RemoveObject(context.WithoutCancel(ctx), w.d.bucket, w.key, minio.RemoveObjectOptions{})
			}
			return translate("commit", w.path, err)
		}
	}
	w.committed = true
	w.partsSize += int64(len(w.buf)) // Size stays what was written
	w.buf = w.buf[:0]
	w.release()
	// Also when this writer stored no tail: one from an earlier writer on
	// the path must not outlive the commit.
	err := w.d.client.RemoveObject(ctx, w.d.bucket, w.tailKey, minio.RemoveObjectOptions{})
	if err != nil && !isNotFound(err) {
		return translate("commit: remove tail", w.path, err)
	}
	if isUploadData(w.path) {
		w.d.commits.put(w.path, commit{size: w.partsSize, etag: put.ETag, mod: w.d.commits.now(), hash: hash})
	}
	return nil
}

// Cancel aborts the multipart upload and removes the pending tail.
//
// distribution cancels a committed writer when the rest of its commit
// failed (the digest, the move, the link): the writer stays committed, and
// a commit it held is stored as it would have been (see settle).
func (w *writer) Cancel(ctx context.Context) error {
	if w.committed {
		if h := w.d.held.get(w.path); h != nil && h.w == w {
			if err := w.d.settle(context.WithoutCancel(ctx), w.path, h); err != nil {
				return err
			}
		}
	}
	if err := w.usable(); err != nil {
		return err
	}
	w.cancelled = true
	w.d.writers.remove(w)
	w.release()
	if w.uploadID != "" {
		err := minio.Core{Client: w.d.client}.AbortMultipartUpload(ctx, w.d.bucket, w.dataKey, w.uploadID)
		if err != nil && errorCode(err) != codeNoSuchUpload {
			return translate("cancel", w.path, err)
		}
	}
	err := w.d.client.RemoveObject(ctx, w.d.bucket, w.tailKey, minio.RemoveObjectOptions{})
	if err != nil && !isNotFound(err) {
		return translate("cancel: remove tail", w.path, err)
	}
	return nil
}

// deletePending aborts the uploads of the uncommitted writers on path and
// under it, removes their tails, and returns how many there were.
func (d *driver) deletePending(ctx context.Context, path string) (int, error) {
	// One listing finds the tail of path and those under it (and keys that
	// merely start like it, skipped): the pending keys are few, and the
	// common case, no writer left, costs this one request.
	tail := d.pendingKey(path)
	var tails []string
	for obj := range d.client.ListObjectsIter(ctx, d.bucket, minio.ListObjectsOptions{Prefix: tail, Recursive: true}) {
		if obj.Err != nil {
			return 0, translate("delete: list pending", path, obj.Err)
		}
		if obj.Key == tail || strings.HasPrefix(obj.Key, tail+"/") {
			tails = append(tails, obj.Key)
		}
	}
	core := minio.Core{Client: d.client}
	var found []string
	for _, key := range tails {
		info, err := d.client.StatObject(ctx, d.bucket, key, minio.StatObjectOptions{})
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return 0, translate("delete: stat pending", path, err)
		}
		found = append(found, key)
		id := info.Metadata.Get(headerMetaPrefix + metaUploadID)
		if id == "" {
			continue
		}
		dataKey := d.root + key[len(d.pendingRoot):]
		if k := info.Metadata.Get(headerMetaPrefix + metaDataKey); k != "" && d.isDataKey(d.root+k) {
			dataKey = d.root + k
		}
		if err := core.AbortMultipartUpload(ctx, d.bucket, dataKey, id); err != nil && errorCode(err) != codeNoSuchUpload {
			return 0, translate("delete: abort upload", path, err)
		}
	}
	if len(found) == 0 {
		return 0, nil
	}
	err := d.removeObjects(ctx, func(yield func(minio.ObjectInfo) bool) {
		for _, key := range found {
			if !yield(minio.ObjectInfo{Key: key}) {
				return
			}
		}
	})
	if err != nil {
		return 0, translate("delete: remove pending", path, err)
	}
	return len(found), nil
}
