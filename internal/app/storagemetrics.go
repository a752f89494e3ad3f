package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/prometheus/client_golang/prometheus"
)

// countingDriver times the storage backend's calls and counts its errors
// by operation. A path that is not found, a bad path or offset and a
// cancelled request are answers, not errors of the backend, and are not
// counted as errors.
type countingDriver struct {
	storagedriver.StorageDriver
	errs    *prometheus.CounterVec
	seconds map[string]prometheus.Observer // by op
}

// storageOps are the operations the storage metrics are by.
var storageOps = []string{"read", "write", "stat", "list", "move", "delete", "walk"}

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
	start := time.Now()
	return d.count("delete", start, d.batch.DeleteFiles(ctx, paths))
}

// countStorageErrors wraps d so that its calls are timed in
// portcullis_storage_action_seconds and its errors counted in
// portcullis_storage_errors_total; what d does besides the driver
// interface (pinging, deleting in batches) it keeps doing.
func countStorageErrors(d storagedriver.StorageDriver, reg prometheus.Registerer) (storagedriver.StorageDriver, error) {
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portcullis_storage_errors_total",
		Help: "Storage backend errors by operation (read, write, stat, list, move, delete, walk); a path not found is not an error.",
	}, []string{"op"})
	seconds := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "portcullis_storage_action_seconds",
		Help:    "Time of the storage backend's calls by operation (read, write, stat, list, move, delete, walk): for a read or a write until the reader or writer is handed out, for a walk the whole walk.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
	}, []string{"op"})
	for _, c := range []prometheus.Collector{errs, seconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register storage metrics: %w", err)
		}
	}
	c := &countingDriver{StorageDriver: d, errs: errs, seconds: map[string]prometheus.Observer{}}
	for _, op := range storageOps {
		errs.WithLabelValues(op) // at 0 from the start, for rates and alerts
		c.seconds[op] = seconds.WithLabelValues(op)
	}
	if b, ok := d.(batchDeleter); ok {
		return countingBatchDriver{countingDriver: c, batch: b}, nil
	}
	return c, nil
}

// Ping asks the backend whether it is reachable, as checkStorage does.
func (d *countingDriver) Ping(ctx context.Context) error {
	if p, ok := d.StorageDriver.(pinger); ok {
		start := time.Now()
		return d.count("stat", start, p.Ping(ctx))
	}
	_, err := d.Stat(ctx, "/")
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	return err
}

// count records a call of op that began at start and returned err.
func (d *countingDriver) count(op string, start time.Time, err error) error {
	d.seconds[op].Observe(time.Since(start).Seconds())
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
	start := time.Now()
	b, err := d.StorageDriver.GetContent(ctx, path)
	return b, d.count("read", start, err)
}

func (d *countingDriver) PutContent(ctx context.Context, path string, content []byte) error {
	start := time.Now()
	return d.count("write", start, d.StorageDriver.PutContent(ctx, path, content))
}

func (d *countingDriver) Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	start := time.Now()
	r, err := d.StorageDriver.Reader(ctx, path, offset)
	return r, d.count("read", start, err)
}

func (d *countingDriver) Writer(ctx context.Context, path string, append bool) (storagedriver.FileWriter, error) {
	start := time.Now()
	w, err := d.StorageDriver.Writer(ctx, path, append)
	return w, d.count("write", start, err)
}

func (d *countingDriver) Stat(ctx context.Context, path string) (storagedriver.FileInfo, error) {
	start := time.Now()
	fi, err := d.StorageDriver.Stat(ctx, path)
	return fi, d.count("stat", start, err)
}

func (d *countingDriver) List(ctx context.Context, path string) ([]string, error) {
	start := time.Now()
	l, err := d.StorageDriver.List(ctx, path)
	return l, d.count("list", start, err)
}

func (d *countingDriver) Move(ctx context.Context, source, dest string) error {
	start := time.Now()
	return d.count("move", start, d.StorageDriver.Move(ctx, source, dest))
}

func (d *countingDriver) Delete(ctx context.Context, path string) error {
	start := time.Now()
	return d.count("delete", start, d.StorageDriver.Delete(ctx, path))
}

func (d *countingDriver) RedirectURL(r *http.Request, path string) (string, error) {
	start := time.Now()
	u, err := d.StorageDriver.RedirectURL(r, path)
	return u, d.count("read", start, err)
}

// Walk counts the walk's own errors: once the callback has returned an
// error, the walk's error is the callback's (wrapped or not).
func (d *countingDriver) Walk(ctx context.Context, path string, f storagedriver.WalkFn, options ...func(*storagedriver.WalkOptions)) error {
	start := time.Now()
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
	return d.count("walk", start, err)
}
