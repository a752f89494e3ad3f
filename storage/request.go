package storage

import (
	"context"
	"errors"
	"sync"
)

// requestKey is the context key of a request's record.
type requestKey struct{}

// request is the driver's record of one registry request, carried by the
// request's context (WithRequest).
//
// It collects the errors of writer Closes made with the request's context.
// distribution's upload handlers ignore the error of Close, which stores an
// upload's state for its next request: without this record a PATCH whose
// state was not stored would be answered 202, and the upload's next request
// would find the state missing.
//
// It also carries, from distribution's read of an upload's startedat to the
// Writer that resumes the upload next in the same request, the upload's
// writer state read with it (see resumeRead): facts of this request only,
// never shared with another.
type request struct {
	mu      sync.Mutex
	err     error
	resumes map[string]*resumeRead // by upload data path
	// empty are the uploads the request's client says hold no byte, by
	// upload ID (see UploadOffset).
	empty map[string]bool
}

// WithRequest returns ctx carrying the driver's record of one request, and
// the function that returns the failures of the writes made with ctx that
// their callers may ignore (nil when there was none). Whoever answers the
// request must not acknowledge it when that function returns an error. The
// record also lets the driver hand what one call of the request read to
// the next.
func WithRequest(ctx context.Context) (context.Context, func(context.Context) error) {
	f := &request{}
	return context.WithValue(ctx, requestKey{}, f), func(context.Context) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.err
	}
}

// requestOf returns ctx's request record, or nil.
func requestOf(ctx context.Context) *request {
	r, _ := ctx.Value(requestKey{}).(*request)
	return r
}

// noteWriteFailure records err in ctx's record, if it carries one.
func noteWriteFailure(ctx context.Context, err error) {
	f := requestOf(ctx)
	if f == nil || err == nil {
		return
	}
	f.mu.Lock()
	f.err = errors.Join(f.err, err)
	f.mu.Unlock()
}

// putResume keeps r for the Writer on the upload data at path that the
// request opens next.
func (f *request) putResume(path string, r *resumeRead) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.resumes == nil {
		f.resumes = map[string]*resumeRead{}
	}
	f.resumes[path] = r
}

// takeResume returns and forgets what the request read of the writer state
// at path, or nil.
func (f *request) takeResume(path string) *resumeRead {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.resumes[path]
	delete(f.resumes, path)
	return r
}

// UploadOffset tells the driver, through ctx's request record (if it
// carries one), how many bytes the client of the request says the upload
// with ID upload holds: the offset of its upload state, which distribution
// checks against the upload it resumes before it takes the request's body.
//
// An upload whose client says it holds none is resumed without reading its
// writer state (see startedAt): it has none unless a request stored bytes
// and failed before the client was told, and distribution would then
// refuse the request for the offset's mismatch; resumed empty, it takes
// the bytes from the start again, as the client sends them.
func UploadOffset(ctx context.Context, upload string, offset int64) {
	f := requestOf(ctx)
	if f == nil || offset != 0 || upload == "" {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.empty == nil {
		f.empty = map[string]bool{}
	}
	f.empty[upload] = true
}

// emptyUpload reports whether the request's client says the upload with ID
// upload holds no byte.
func (f *request) emptyUpload(upload string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.empty[upload]
}
