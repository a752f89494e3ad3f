package scan

import (
	"fmt"
	"os"
	"testing"
)

// testRoot holds fixtures shared between tests; TestMain removes it.
var testRoot string

func TestMain(m *testing.M) {
	var err error
	testRoot, err = os.MkdirTemp("", "portcullis-scan-test-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(testRoot)
	os.Exit(code)
}

func osMkdirTemp() (string, error) { return os.MkdirTemp(testRoot, "fixture-*") }
