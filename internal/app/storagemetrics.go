package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/prometheus/client_golang/prometheus"
)

// countingDriver counts the storage backend's errors by operation. A path
// that is not found, a bad path or offset and a cancelled request are
// answers, not errors of the backend, and are not counted.
type countingDriver struct {
	storagedriver.StorageDriver
	errs *prometheus.CounterVec
}

// batchDeleter is a driver that deletes many files per request (S3); the
// collector uses it when the driver has it.
type batchDeleter interface {
	DeleteFiles(ctx context.Context, paths []string) error
}

// countingBatchDriver is a countingDriver over a driver that deletes in
// batches, which it keeps doing.
type countingBatchDriver struct {
	*countingDriver
	batch batchDeleter
}

func (d countingBatchDriver) DeleteFiles(ctx context.Context, paths []string) error {
	return d.count("delete", d.batch.DeleteFiles(ctx, paths))
}

// countStorageErrors wraps d so that its errors are counted in
// portcullis_storage_errors_total; what d does besides the driver
// interface (pinging, deleting in batches) it keeps doing.
func countStorageErrors(d storagedriver.StorageDriver, reg prometheus.Registerer) (storagedriver.StorageDriver, error) {
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portcullis_storage_errors_total",
		Help: "Storage backend errors by operation (read, write, stat, list, move, delete, walk); a path not found is not an error.",
	}, []string{"op"})
	if err := reg.Register(errs); err != nil {
		return nil, fmt.Errorf("register storage metrics: %w", err)
	}
	for _, op := range []string{"read", "write", "stat", "list", "move", "delete", "walk"} {
		errs.WithLabelValues(op) // at 0 from the start, for rates and alerts
	}
	c := &countingDriver{StorageDriver: d, errs: errs}
	if b, ok := d.(batchDeleter); ok {
		return countingBatchDriver{countingDriver: c, batch: b}, nil
	}
	return c, nil
}

// Ping asks the backend whether it is reachable, as checkStorage does.
func (d *countingDriver) Ping(ctx context.Context) error {
	if p, ok := d.StorageDriver.(pinger); ok {
		return d.count("stat", p.Ping(ctx))
	}
	_, err := d.Stat(ctx, "/")
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	return err
}

func (d *countingDriver) count(op string, err error) error {
	if err != nil && !answer(err) {
		d.errs.WithLabelValues(op).Inc()
	}
	return err
}

// answer reports whether err is the backend's answer rather than its
// failure: a path not found, a bad path or offset, a method the driver
// does not have, or a request cancelled by its client. distribution's
// drivers wrap other causes in a storagedriver.Error that does not unwrap.
func answer(err error) bool {
	var se storagedriver.Error
	if errors.As(err, &se) && se.Detail != nil {
		err = se.Detail
	}
	var (
		nf storagedriver.PathNotFoundError
		ip storagedriver.InvalidPathError
		io storagedriver.InvalidOffsetError
		um storagedriver.ErrUnsupportedMethod
	)
	return errors.Is(err, context.Canceled) || errors.As(err, &nf) || errors.As(err, &ip) || errors.As(err, &io) || errors.As(err, &um)
}

func (d *countingDriver) GetContent(ctx context.Context, path string) ([]byte, error) {
	b, err := d.StorageDriver.GetContent(ctx, path)
	return b, d.count("read", err)
}

func (d *countingDriver) PutContent(ctx context.Context, path string, content []byte) error {
	return d.count("write", d.StorageDriver.PutContent(ctx, path, content))
}

func (d *countingDriver) Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	r, err := d.StorageDriver.Reader(ctx, path, offset)
	return r, d.count("read", err)
}

func (d *countingDriver) Writer(ctx context.Context, path string, append bool) (storagedriver.FileWriter, error) {
	w, err := d.StorageDriver.Writer(ctx, path, append)
	return w, d.count("write", err)
}

func (d *countingDriver) Stat(ctx context.Context, path string) (storagedriver.FileInfo, error) {
	fi, err := d.StorageDriver.Stat(ctx, path)
	return fi, d.count("stat", err)
}

func (d *countingDriver) List(ctx context.Context, path string) ([]string, error) {
	l, err := d.StorageDriver.List(ctx, path)
	return l, d.count("list", err)
}

func (d *countingDriver) Move(ctx context.Context, source, dest string) error {
	return d.count("move", d.StorageDriver.Move(ctx, source, dest))
}

func (d *countingDriver) Delete(ctx context.Context, path string) error {
	return d.count("delete", d.StorageDriver.Delete(ctx, path))
}

func (d *countingDriver) RedirectURL(r *http.Request, path string) (string, error) {
	u, err := d.StorageDriver.RedirectURL(r, path)
	return u, d.count("read", err)
}

// Walk counts the walk's own errors: once the callback has returned an
// error, the walk's error is the callback's (wrapped or not).
func (d *countingDriver) Walk(ctx context.Context, path string, f storagedriver.WalkFn, options ...func(*storagedriver.WalkOptions)) error {
	var (
		mu    sync.Mutex // a driver may call f from several goroutines
		fnErr error
	)
	err := d.StorageDriver.Walk(ctx, path, func(fi storagedriver.FileInfo) error {
		err := f(fi)
		if err != nil {
			mu.Lock()
			fnErr = err
			mu.Unlock()
		}
		return err
	}, options...)
	mu.Lock()
	defer mu.Unlock()
	if fnErr != nil {
		return err // the walk stopped because the callback did
	}
	return d.count("walk", err)
}
