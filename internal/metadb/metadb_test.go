package metadb

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
)

func TestSecretPersistsAndLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "portcullis.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := db.Secret("upload-state", 32)
	if err != nil || len(a) != 32 {
		t.Fatalf("Secret: %v (%d bytes)", err, len(a))
	}
	if b, _ := db.Secret("upload-state", 32); !bytes.Equal(a, b) {
		t.Error("a second call returned another secret")
	}
	if c, _ := db.Secret("other", 32); bytes.Equal(a, c) {
		t.Error("two names share a secret")
	}
	if _, err := Open(path); !errors.Is(err, ErrLocked) {
		t.Errorf("second Open while held: %v, want ErrLocked", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if b, _ := db.Secret("upload-state", 32); !bytes.Equal(a, b) {
		t.Error("the secret changed across a reopen")
	}
}
