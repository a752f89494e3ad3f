package storage

import (
	"flag"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/testsuites"

	"github.com/portcullis/portcullis/storage/miniotest"
)

// envLarge set to 1 makes TestDriverSuite run the suite's 5 GiB stream test
// too; it takes 1.5 minutes on two cores and writes 5 GiB to the temporary
// directory.
const envLarge = "PORTCULLIS_STORAGE_LARGE"

// newTestDriver returns a Driver on o.Bucket of srv, or on a new bucket, at
// o.Endpoint or srv's, failing tb on error.
func newTestDriver(tb testing.TB, srv *miniotest.Server, o Options) *Driver {
	tb.Helper()
	if o.Endpoint == "" {
		o.Endpoint = srv.Endpoint
	}
	o.AccessKey, o.SecretKey = srv.AccessKey, srv.SecretKey
	if o.Bucket == "" {
		o.Bucket = srv.NewBucket(tb)
	}
	d, err := New(tb.Context(), o)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return d
}

// TestDriverSuite runs distribution's driver conformance suite against a real
// MinIO, with the smallest part size so that its multi-megabyte streams span
// several parts, and with redirects on so that presigned URLs are fetched.
//
// The suite's own -short mode shrinks its big tests (go test -short takes
// about 20 s). Without -short everything runs at full size except
// TestWriteReadLargeStreams (5 GiB), which runs only with
// PORTCULLIS_STORAGE_LARGE=1.
func TestDriverSuite(t *testing.T) {
	if os.Getenv(envLarge) != "1" {
		skipSuiteMethods(t, "TestWriteReadLargeStreams")
	}
	srv := miniotest.Start(t)
	d := newTestDriver(t, srv, Options{Prefix: "suite", PartSize: MinPartSize, Redirect: true})
	testsuites.Driver(t, func() (storagedriver.StorageDriver, error) { return d, nil }, false)
}

// skipSuiteMethods makes testify's suite runner leave out the named methods
// of testsuites.DriverSuite, by setting its -testify.m filter to every other
// test method until t ends. A filter given on the command line wins.
func skipSuiteMethods(t *testing.T, skip ...string) {
	t.Helper()
	f := flag.Lookup("testify.m")
	if f == nil {
		t.Fatal("testify no longer has a -testify.m flag: find another way to skip " + strings.Join(skip, ", "))
	}
	if f.Value.String() != "" {
		return
	}
	var keep []string
	typ := reflect.TypeFor[*testsuites.DriverSuite]()
	for i := range typ.NumMethod() {
		name := typ.Method(i).Name
		if strings.HasPrefix(name, "Test") && !slices.Contains(skip, name) {
			keep = append(keep, regexp.QuoteMeta(name))
		}
	}
	if err := f.Value.Set("^(" + strings.Join(keep, "|") + ")$"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Value.Set("") })
	t.Logf("leaving out %s; set %s=1 to run it", strings.Join(skip, ", "), envLarge)
}
