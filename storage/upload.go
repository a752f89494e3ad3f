package storage

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
)

// What the driver knows of distribution's layout (registry/storage/paths.go),
// so that a blob upload costs fewer requests. Each rule below depends only on
// facts that hold on every replica over the bucket, or on facts about one
// upload that no other request can change:
//
//	/docker/registry/v2/
//	├── blobs/<alg>/<xx>/<hex>/data               a file, never a directory
//	└── repositories/<name>/
//	    ├── _layers/… _manifests/…/link           files, never directories
//	    └── _uploads/<id>/                        a directory, never a file
//	        ├── data                              the upload's data (a Writer)
//	        ├── startedat
//	        └── hashstates/<alg>/<offset>         distribution's hash state
//	                                              after <offset> bytes
const (
	registryRoot     = "/docker/registry/v2/"
	blobsRoot        = registryRoot + "blobs/"
	repositoriesRoot = registryRoot + "repositories/"
)

// uploadDir returns the upload directory (…/_uploads/<id>) that path is in or
// is, and the rest of path below it ("" for the directory itself).
func uploadDir(path string) (dir, rest string, ok bool) {
	if !strings.HasPrefix(path, repositoriesRoot) {
		return "", "", false
	}
	// The first: no component of a repository's name starts with '_'.
	i := strings.Index(path, "/_uploads/")
	if i < 0 {
		return "", "", false
	}
	id, rest, _ := strings.Cut(path[i+len("/_uploads/"):], "/")
	if id == "" {
		return "", "", false
	}
	return path[:i+len("/_uploads/")+len(id)], rest, true
}

// uploadID returns the ID of the upload whose directory path is in or is;
// "" when there is none.
func uploadID(path string) string {
	dir, _, ok := uploadDir(path)
	if !ok {
		return ""
	}
	return dir[strings.LastIndex(dir, "/")+1:]
}

// isUploadData reports whether path is an upload's data: the path of the only
// Writer distribution opens.
func isUploadData(path string) bool {
	_, rest, ok := uploadDir(path)
	return ok && rest == "data"
}

// isHashState reports whether path is one of an upload's hash states.
func isHashState(path string) bool {
	_, _, offset, ok := parseHashStatePath(path)
	return ok && offset >= 0
}

// isUploadDir reports whether path is an upload's directory.
func isUploadDir(path string) bool {
	_, rest, ok := uploadDir(path)
	return ok && rest == ""
}

// isLayoutFile reports whether path is a file in distribution's layout that
// can never be a directory: a blob's data or a repository's link. Stat of
// such a path that holds no object needs no listing to say so.
func isLayoutFile(path string) bool {
	if rest, ok := strings.CutPrefix(path, blobsRoot); ok {
		s := strings.Split(rest, "/") // <alg>/<xx>/<hex>/data
		return len(s) == 4 && s[3] == "data"
	}
	rest, ok := strings.CutPrefix(path, repositoriesRoot)
	if !ok {
		return false
	}
	// The first of these: no component of a repository's name starts
	// with '_' (a tag may).
	i, j := strings.Index(rest, "/_layers/"), strings.Index(rest, "/_manifests/")
	var s []string
	switch {
	case i >= 0 && (j < 0 || i < j):
		s = strings.Split(rest[i+len("/_layers/"):], "/") // <alg>/<hex>/link
		return len(s) == 3 && s[2] == "link"
	case j >= 0:
		s = strings.Split(rest[j+len("/_manifests/"):], "/")
	default:
		return false
	}
	switch {
	case len(s) == 4 && s[0] == "revisions": // revisions/<alg>/<hex>/link
		return s[3] == "link"
	case len(s) == 4 && s[0] == "tags": // tags/<tag>/current/link
		return s[2] == "current" && s[3] == "link"
	case len(s) == 6 && s[0] == "tags": // tags/<tag>/index/<alg>/<hex>/link
		return s[2] == "index" && s[5] == "link"
	}
	return false
}

// hashState is what distribution saves of an upload's digest after offset
// bytes, at …/_uploads/<id>/hashstates/<alg>/<offset>.
type hashState struct {
	alg    string
	offset int64
	state  []byte
}

// parseHashStatePath returns the upload data path, algorithm and offset of
// a hash state's path; a hash state directory (…/hashstates/<alg>) gives
// offset -1.
func parseHashStatePath(path string) (data, alg string, offset int64, ok bool) {
	dir, rest, ok := uploadDir(path)
	if !ok {
		return "", "", 0, false
	}
	rest, ok = strings.CutPrefix(rest, "hashstates/")
	if !ok {
		return "", "", 0, false
	}
	alg, off, hasOffset := strings.Cut(rest, "/")
	if alg == "" {
		return "", "", 0, false
	}
	offset = -1
	if hasOffset {
		n, err := strconv.ParseInt(off, 10, 64)
		if err != nil || n < 0 {
			return "", "", 0, false
		}
		offset = n
	}
	return dir + "/data", alg, offset, true
}

// Metadata of a pending tail that carries distribution's hash state.
const (
	metaHashAlg    = "Portcullis-Hash-Alg"
	metaHashOffset = "Portcullis-Hash-Offset"
	metaHashState  = "Portcullis-Hash-State"
)

// meta returns h as a pending tail's metadata.
func (h *hashState) meta() map[string]string {
	return map[string]string{
		metaHashAlg:    h.alg,
		metaHashOffset: strconv.FormatInt(h.offset, 10),
		metaHashState:  base64.StdEncoding.EncodeToString(h.state),
	}
}

// equal reports whether h and o are the same state (or both nil).
func (h *hashState) equal(o *hashState) bool {
	if h == nil || o == nil {
		return h == o
	}
	return h.alg == o.alg && h.offset == o.offset && bytes.Equal(h.state, o.state)
}

// hashStateOf reads the hash state a pending tail's metadata carries.
func hashStateOf(get func(string) string) (*hashState, bool) {
	alg := get(headerMetaPrefix + metaHashAlg)
	offset, err := strconv.ParseInt(get(headerMetaPrefix+metaHashOffset), 10, 64)
	if alg == "" || strings.Contains(alg, "/") || err != nil || offset < 0 {
		return nil, false
	}
	state, err := base64.StdEncoding.DecodeString(get(headerMetaPrefix + metaHashState))
	if err != nil {
		return nil, false
	}
	return &hashState{alg: alg, offset: offset, state: state}, true
}

// dropHashState takes distribution's write of an upload's hash state, and
// reports whether it needs no object:
//   - the state after 0 bytes: distribution starts a hash afresh at offset 0
//     and never reads that state back;
//   - any state of an upload whose data this process committed: the upload
//     is over and distribution deletes its directory next (it stores the
//     state once more after the commit).
//
// The state of an upload whose writer is open in this process also goes
// into the writer's pending tail, which Close stores (distribution saves the
// state just before it closes the writer), so that the next request for the
// upload, on any replica, reads it back with the tail instead of listing and
// reading hash states. The object is still written: it is the upload's
// visible sign of activity, by which collections tell an abandoned upload
// (ModTime under _uploads/<id>); except while the upload's startedat, which
// its writer read in the same request, is less than freshUpload old: its
// own ModTime then shows the activity, within freshUpload (the collector
// counts that in). So the one PATCH of a small blob stores no hash state.
func (d *driver) dropHashState(path string, content []byte) bool {
	data, alg, offset, ok := parseHashStatePath(path)
	if !ok || offset < 0 {
		return false
	}
	if offset == 0 {
		return true
	}
	if _, committed := d.commits.get(data); committed {
		return true
	}
	if d.held.get(data) != nil {
		return true
	}
	if prev, ok := d.hashWrites.get(path); ok && bytes.Equal(prev, content) {
		return true // distribution closes a writer twice per request
	}
	h := &hashState{alg: alg, offset: offset, state: bytes.Clone(content)}
	if freshStart(d.writers.startedAt(data), d.commits.now()) && d.writers.setHash(data, h, false) {
		// Recorded as written: the second Close of the request stores
		// nothing either.
		d.hashWrites.put(path, bytes.Clone(content))
		return true
	}
	d.writers.setHash(data, h, true)
	return false
}

// freshUpload is the age of an upload's startedat under which a PATCH
// stores no hash state as its sign of activity (see dropHashState).
const freshUpload = time.Minute

// freshStart reports whether startedAt, the content of an upload's
// startedat, is a time less than freshUpload before now. A start in the
// future (the replica that wrote it has a clock ahead of this one's) is not
// fresh: the PATCH stores its hash state, so that a clock behind never
// stretches the time a session goes without a sign of activity.
func freshStart(startedAt string, now time.Time) bool {
	t, err := time.Parse(time.RFC3339, startedAt)
	if err != nil {
		return false
	}
	age := now.Sub(t)
	return age >= 0 && age < freshUpload
}

// metaHashStates is the metadata of an upload's pending tail that lists
// the offsets of the hash states stored for the upload, so that the delete
// of the upload's directory after a held commit knows every key in it
// without a listing (see hashStates).
const metaHashStates = "Portcullis-Hash-States"

// maxListedHashStates bounds the offsets a tail lists (S3 metadata is small):
// past it the list is dropped, and the upload's directory is listed when it
// is deleted.
const maxListedHashStates = 32

// hashStates are the hash states stored for an upload ("<alg>/<offset>"),
// as far as its writers know them. An upload's directory holds its
// startedat, those hash states and, when a commit was stored, its data:
// distribution writes nothing else there. The list starts empty with the
// upload (no writer state: nothing written yet), is carried by each tail,
// and gains each state before it is stored (so a write that fails but
// landed is listed too). It is unknown when a tail lacks it (an older
// driver stored it) or it grew too long; the directory is then listed.
type hashStates struct {
	states []string
	known  bool
}

// add records the state of alg at offset.
func (h *hashStates) add(alg string, offset int64) {
	s := alg + "/" + strconv.FormatInt(offset, 10)
	if !h.known || slices.Contains(h.states, s) {
		return
	}
	if len(h.states) >= maxListedHashStates {
		h.states, h.known = nil, false
		return
	}
	h.states = append(h.states, s)
}

// hashStatesVersion opens a tail's list of hash states.
const hashStatesVersion = "v1"

// meta returns the list as a tail's metadata value, "" when unknown.
func (h hashStates) meta() string {
	if !h.known {
		return ""
	}
	return strings.Join(append([]string{hashStatesVersion}, h.states...), " ")
}

// hashStatesOf reads the list a tail's metadata value v carries.
func hashStatesOf(v string) hashStates {
	f := strings.Fields(v)
	if len(f) == 0 || f[0] != hashStatesVersion || len(f) > maxListedHashStates+1 {
		return hashStates{}
	}
	h := hashStates{known: true}
	for _, s := range f[1:] {
		alg, off, ok := strings.Cut(s, "/")
		o, err := strconv.ParseInt(off, 10, 64)
		if !ok || alg == "" || strings.ContainsAny(alg, "/.") || err != nil || o < 0 {
			return hashStates{}
		}
		h.states = append(h.states, alg+"/"+strconv.FormatInt(o, 10))
	}
	return h
}

// uploadKeys returns the keys of everything in the directory of the upload
// whose data is at path, as states lists them, or nil when that is unknown.
func (d *driver) uploadKeys(path string, states hashStates) []string {
	dir, rest, ok := uploadDir(path)
	if !ok || rest != "data" || !states.known {
		return nil
	}
	keys := []string{d.key(dir + "/startedat"), d.key(path)}
	for _, s := range states.states {
		keys = append(keys, d.key(dir+"/hashstates/"+s))
	}
	return keys
}

// carriedHash returns the hash state of the upload whose data is at path
// that its open writer, or its commit in this process, carries.
func (d *driver) carriedHash(path string) *hashState {
	if h := d.writers.hash(path); h != nil {
		return h
	}
	if c, ok := d.commits.get(path); ok {
		return c.hash
	}
	if h, ok := d.held.unmoved(path); ok {
		return h.hash
	}
	return nil
}

// hashStateList answers distribution's listing of an upload's hash states
// from the state its open writer or its commit carries, the state at the
// writer's size: the only one distribution looks for.
func (d *driver) hashStateList(dir string) ([]string, bool) {
	data, alg, offset, ok := parseHashStatePath(dir)
	if !ok || offset >= 0 {
		return nil, false
	}
	h := d.carriedHash(data)
	if h == nil || h.alg != alg {
		return nil, false
	}
	return []string{dir + "/" + strconv.FormatInt(h.offset, 10)}, true
}

// hashStateContent answers distribution's read of a hash state that the
// open writer of its upload carries.
func (d *driver) hashStateContent(path string) ([]byte, bool) {
	data, alg, offset, ok := parseHashStatePath(path)
	if !ok || offset < 0 {
		return nil, false
	}
	h := d.carriedHash(data)
	if h == nil || h.alg != alg || h.offset != offset {
		return nil, false
	}
	return append([]byte(nil), h.state...), true
}

// openWriters are the writers of upload data open in this process, by
// path, with the hash state each carries. Only a writer's own goroutine
// reads its fields; the hash state is shared under the lock.
//
// distribution closes, commits or cancels every writer it opens, except
// when a request fails before it uses the writer; such entries are dropped
// once they are old and many.
type openWriters struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]*openWriter
}

type openWriter struct {
	w         *writer
	hash      *hashState // nil, or the state the writer carries
	states    hashStates // the hash states stored for the upload
	startedAt string     // the upload's startedat, as the writer read it
	opened    time.Time
}

func newOpenWriters(now func() time.Time) *openWriters {
	return &openWriters{now: now, m: map[string]*openWriter{}}
}

// maxOpenWriters is the number of entries past which old ones are dropped.
const maxOpenWriters = 1024

// staleWriter is the age past which an entry may be dropped.
const staleWriter = time.Hour

// add makes w the writer open on its path, carrying h (which may be nil)
// and the list of hash states its upload has.
func (o *openWriters) add(w *writer, h *hashState, states hashStates) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	if len(o.m) >= maxOpenWriters {
		for p, e := range o.m {
			if now.Sub(e.opened) > staleWriter {
				delete(o.m, p)
			}
		}
	}
	o.m[w.path] = &openWriter{w: w, hash: h, states: states, startedAt: w.startedAt, opened: now}
}

// remove forgets w, if it is still the writer open on its path.
func (o *openWriters) remove(w *writer) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e := o.m[w.path]; e != nil && e.w == w {
		delete(o.m, w.path)
	}
}

// hash returns the hash state the writer open on path carries, or nil.
func (o *openWriters) hash(path string) *hashState {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e := o.m[path]; e != nil {
		return e.hash
	}
	return nil
}

// hashOf returns the hash state w carries, or nil.
func (o *openWriters) hashOf(w *writer) *hashState {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e := o.m[w.path]; e != nil && e.w == w {
		return e.hash
	}
	return nil
}

// setHash gives h to the writer open on path, if there is one, and, when
// stored, lists it among the upload's hash states; its Close stores both
// in the pending tail. It reports whether a writer took h.
func (o *openWriters) setHash(path string, h *hashState, stored bool) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	e := o.m[path]
	if e == nil {
		return false
	}
	e.hash = h
	if stored {
		e.states.add(h.alg, h.offset)
	}
	return true
}

// startedAt returns the content of the upload's startedat as the writer
// open on path read it, or "".
func (o *openWriters) startedAt(path string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e := o.m[path]; e != nil {
		return e.startedAt
	}
	return ""
}

// statesOf returns the list of hash states of w's upload, unknown when w
// is not the writer open on its path.
func (o *openWriters) statesOf(w *writer) hashStates {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e := o.m[w.path]; e != nil && e.w == w {
		return hashStates{states: slices.Clone(e.states.states), known: e.states.known}
	}
	return hashStates{}
}

// commit is what this process knows of upload data it committed: the
// immutable facts Stat, Move and distribution's check of the digest would
// otherwise ask the server for, right after.
type commit struct {
	size int64
	etag string     // "" when the data is an alias: Move asks for it
	mod  time.Time  // when the writer committed, by this process's clock
	hash *hashState // the hash state at size that the writer carried, or nil
}

// recentTTL is how long a record of recent answers for its object.
// distribution stats and moves an upload's data within the request that
// commits it, and closes a writer twice within one request.
const recentTTL = time.Minute

// maxRecent bounds the records kept: about one per upload at work at once.
const maxRecent = 1024

// recent records facts about objects this process has just written, by
// path, until they are moved or deleted, or for recentTTL at most. The facts
// are immutable while the record lives: nothing writes an upload's data
// after its commit, nor another content at a hash state's path. If another
// replica deletes the object meanwhile, what the record answers is what a
// request a moment earlier would have answered.
type recent[V any] struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]recentEntry[V]
}

type recentEntry[V any] struct {
	v  V
	at time.Time
}

func newRecent[V any](now func() time.Time) *recent[V] {
	return &recent[V]{now: now, m: map[string]recentEntry[V]{}}
}

// put records v for path.
func (r *recent[V]) put(path string, v V) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if len(r.m) >= maxRecent {
		for p, e := range r.m {
			if now.Sub(e.at) > recentTTL {
				delete(r.m, p)
			}
		}
		if len(r.m) >= maxRecent {
			clear(r.m)
		}
	}
	r.m[path] = recentEntry[V]{v: v, at: now}
}

// get returns the live record of path.
func (r *recent[V]) get(path string) (V, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.m[path]
	if ok && r.now().Sub(e.at) > recentTTL {
		delete(r.m, path)
		ok = false
	}
	return e.v, ok
}

// take returns the live record of path and drops it.
func (r *recent[V]) take(path string) (V, bool) {
	v, ok := r.get(path)
	if ok {
		r.mu.Lock()
		delete(r.m, path)
		r.mu.Unlock()
	}
	return v, ok
}

// forget drops the records of path and of everything under it.
func (r *recent[V]) forget(path string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.m) == 0 {
		return
	}
	delete(r.m, path)
	prefix := strings.TrimSuffix(path, "/") + "/"
	for p := range r.m {
		if strings.HasPrefix(p, prefix) {
			delete(r.m, p)
		}
	}
}

// metaStartedAt is the metadata of an upload's pending tail that carries
// the content of the upload's startedat.
const metaStartedAt = "Portcullis-Started-At"

// resumeRead is an upload's writer state as it was read with the upload's
// startedat, for the Writer that resumes the upload in the same request.
type resumeRead struct {
	found bool        // a pending tail exists
	meta  http.Header // the tail's metadata
	body  []byte      // the tail's bytes
	// startedAt is the content of the upload's startedat: what the tail
	// carries, else what was read of startedat; "" when neither.
	startedAt string
}

// startedAtData returns the upload data path of the upload whose startedat
// is at path.
func startedAtData(path string) (string, bool) {
	dir, rest, ok := uploadDir(path)
	return dir + "/data", ok && rest == "startedat"
}

// startedAt answers distribution's read of an upload's startedat. That read
// opens every request that resumes an upload (distribution's Resume reads
// startedat, then opens a Writer on the upload's data with append, which
// reads the pending tail); the tail read here goes to that Writer through
// the request's record. The tail comes first: one that carries the content
// of startedat (every tail this driver stores of a resumed upload) answers
// both reads with one request. That a tail exists proves the upload does:
// every delete of an upload's directory removes its writer state before
// its startedat (Delete: deletePending first, or the tails first in the
// same multi-object DELETE), and startedat never changes once the upload's
// POST wrote it. Without a tail, or with one an older driver stored,
// startedat itself is read. When the request's client says the upload
// holds no byte (UploadOffset), the tail is not read: startedat alone
// answers, and the upload resumes empty.
func (d *driver) startedAt(ctx context.Context, rec *request, path, data string) ([]byte, error) {
	r := &resumeRead{}
	if !rec.emptyUpload(uploadID(data)) {
		var err error
		if r, err = d.readTail(ctx, data); err != nil {
			return nil, err
		}
	}
	if r.startedAt != "" {
		rec.putResume(data, r)
		return []byte(r.startedAt), nil
	}
	b, err := d.getContent(ctx, path)
	if err != nil {
		return nil, err
	}
	r.startedAt = string(b)
	rec.putResume(data, r)
	return b, nil
}

// readTail reads the pending tail of the writer on path, whole (it is
// smaller than MinPartSize); found is false when there is none.
func (d *driver) readTail(ctx context.Context, path string) (*resumeRead, error) {
	body, info, err := d.getObject(ctx, d.pendingKey(path), minio.GetObjectOptions{})
	if isNotFound(err) {
		return &resumeRead{}, nil
	}
	if err != nil {
		return nil, translate("open writer", path, err)
	}
	defer body.Close()
	data, err := readSized(body, info.Size)
	if err != nil {
		return nil, translate("open writer: read tail", path, err)
	}
	return &resumeRead{found: true, meta: info.Metadata, body: data, startedAt: info.Metadata.Get(headerMetaPrefix + metaStartedAt)}, nil
}

// storableMeta reports whether s can be stored as an object's metadata
// value as it is: short printable ASCII.
func storableMeta(s string) bool {
	if len(s) > 64 {
		return false
	}
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
