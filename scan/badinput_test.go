package scan

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/scan/inventory"
)

// rawDockerTar writes a docker save tarball by hand, with the layer blobs as given (they need
// not be valid) and the DiffIDs computed over the blobs as given.
func rawDockerTar(t testing.TB, blobs ...[]byte) string {
	t.Helper()
	var diffIDs, names []string
	var entries []entry
	for i, b := range blobs {
		sum := sha256.Sum256(b)
		diffIDs = append(diffIDs, "sha256:"+hex.EncodeToString(sum[:]))
		name := fmt.Sprintf("layer%d.tar", i)
		names = append(names, name)
		entries = append(entries, file(name, string(b)))
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	manifest, _ := json.Marshal([]map[string]any{{"Config": "config.json", "RepoTags": []string{"bad:input"}, "Layers": names}})
	entries = append(entries, file("config.json", string(cfg)), file("manifest.json", string(manifest)))
	p := filepath.Join(t.TempDir(), "raw.tar")
	if err := os.WriteFile(p, tarBytes(t, entries...), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tarBlock is one 512-byte ustar header block.
func tarBlock(name string, typ byte, size int64, mode int64) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], fmt.Sprintf("%07o\x00", mode))
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	copy(b[136:148], "00000000000\x00")
	b[156] = typ
	copy(b[257:263], "ustar\x00")
	copy(b[263:265], "00")
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func pad512(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

// sparseTar is a layer holding one PAX (GNU 1.0) sparse file whose logical size is realSize
// but which stores only 512 bytes, starting with data.
func sparseTar(name string, mode, realSize int64, data string) []byte {
	var recs strings.Builder
	for _, kv := range [][2]string{
		{"GNU.sparse.major", "1"}, {"GNU.sparse.minor", "0"},
		{"GNU.sparse.name", name}, {"GNU.sparse.realsize", strconv.FormatInt(realSize, 10)},
	} {
		rec := " " + kv[0] + "=" + kv[1] + "\n"
		n := len(rec)
		for len(strconv.Itoa(n))+len(rec) != n {
			n = len(strconv.Itoa(n)) + len(rec)
		}
		recs.WriteString(strconv.Itoa(n) + rec)
	}
	var out []byte
	out = append(out, tarBlock("PaxHeaders/huge", 'x', int64(recs.Len()), 0o644)...)
	out = append(out, pad512([]byte(recs.String()))...)
	sparseMap := pad512([]byte("1\n0\n512\n"))
	payload := pad512([]byte(data))
	out = append(out, tarBlock("GNUSparseFile.0/huge", '0', int64(len(sparseMap)+len(payload)), mode)...)
	out = append(out, sparseMap...)
	out = append(out, payload...)
	return append(out, make([]byte, 1024)...)
}

// gzipZeros compresses a tar holding one file of n zero bytes.
func gzipZeros(t testing.TB, name string, n int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: n, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, 1<<20)
	for left := n; left > 0; left -= int64(len(zeros)) {
		if _, err := tw.Write(zeros[:min(left, int64(len(zeros)))]); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func TestBadInput(t *testing.T) {
	dbDir, _ := loadTestDB(t)
	canary := t.TempDir() // symlinks in the layers point here; nothing may appear in it
	bomb := gzipZeros(t, "data/zeros", 1<<30)
	tests := []struct {
		name    string
		archive func(t *testing.T) string
		limits  inventory.Options
		wantErr string // "" means the scan must succeed
	}{
		{"corrupt gzip", func(t *testing.T) string {
			return rawDockerTar(t, append([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}, bytes.Repeat([]byte("garbage"), 100)...))
		}, inventory.Options{}, "scan failed: layer 0"},
		{"truncated tar", func(t *testing.T) string {
			b := tarBytes(t, file("var/lib/dpkg/status", readTestdata(t, "debian-status")))
			return rawDockerTar(t, b[:700])
		}, inventory.Options{}, "scan failed: layer 0"},
		{"dot-dot entry", func(t *testing.T) string {
			return writeDockerTar(t, imageOf(t, tarBytes(t, file("../../etc/cron.d/evil", "x"))))
		}, inventory.Options{}, "unsafe path"},
		{"dot-dot in the middle", func(t *testing.T) string {
			return writeDockerTar(t, imageOf(t, tarBytes(t, file("usr/../../../etc/passwd", "x"))))
		}, inventory.Options{}, "unsafe path"},
		{"absolute entry", func(t *testing.T) string {
			return writeDockerTar(t, imageOf(t, tarBytes(t, file("/etc/passwd", "x"))))
		}, inventory.Options{}, "unsafe path"},
		{"hard link escaping", func(t *testing.T) string {
			return writeDockerTar(t, imageOf(t, tarBytes(t, entry{name: "var/lib/dpkg/status", typ: tar.TypeLink, linkname: "../../../etc/shadow"})))
		}, inventory.Options{}, "unsafe path"},
		{"escaping symlinks are not followed", func(t *testing.T) string {
			return writeDockerTar(t, imageOf(t,
				tarBytes(t,
					symlink("etc/os-release", canary+"/os-release"),
					symlink("var/lib/dpkg", "../../../../.."+canary),
					symlink("lib/apk/db/installed", "../../../../../../etc/passwd"),
				),
				tarBytes(t, file("var/lib/dpkg/status", "Package: a\nVersion: 1\n")),
			))
		}, inventory.Options{}, ""},
		{"decompression bomb over the layer limit", func(t *testing.T) string {
			return rawDockerTar(t, bomb)
		}, inventory.Options{MaxLayerBytes: 64 << 20}, "over 67108864 bytes uncompressed"},
		{"decompression bomb as a package database", func(t *testing.T) string {
			return rawDockerTar(t, gzipZeros(t, "var/lib/dpkg/status", 256<<20))
		}, inventory.Options{}, "var/lib/dpkg/status is 268435456 bytes, over the limit of 67108864"},
		{"huge sparse executable", func(t *testing.T) string {
			return rawDockerTar(t, sparseTar("usr/bin/huge", 0o755, 1<<40, "\x7fELF"))
		}, inventory.Options{}, "usr/bin/huge is 1099511627776 bytes, over the limit"},
		{"huge sparse data file is skipped", func(t *testing.T) string {
			return rawDockerTar(t, sparseTar("data/disk.img", 0o644, 1<<40, "data"))
		}, inventory.Options{}, ""},
		{"too many entries", func(t *testing.T) string {
			var es []entry
			for i := range 50 {
				es = append(es, file(fmt.Sprintf("f%d", i), ""))
			}
			return writeDockerTar(t, imageOf(t, tarBytes(t, es...)))
		}, inventory.Options{MaxEntries: 10}, "more than 10 tar entries"},
		{"garbage dpkg status", func(t *testing.T) string {
			return writeDockerTar(t, imageOf(t, tarBytes(t, file("var/lib/dpkg/status", "\x00\x01\x02garbage\xff\nPackage: x\n"))))
		}, inventory.Options{}, "var/lib/dpkg/status: malformed package database: line 1: not a field"},
		{"garbage apk database", func(t *testing.T) string {
			return writeDockerTar(t, imageOf(t, tarBytes(t, file("lib/apk/db/installed", "P:musl\nthis is not apk\n"))))
		}, inventory.Options{}, "lib/apk/db/installed: malformed package database: line 2"},
		{"garbage rpm database", func(t *testing.T) string {
			return writeDockerTar(t, imageOf(t, tarBytes(t, file("var/lib/rpm/rpmdb.sqlite", "SQLite format 3\x00"+strings.Repeat("\xff", 4000)))))
		}, inventory.Options{}, "var/lib/rpm/rpmdb.sqlite: malformed package database: sqlite"},
		{"rpm database with an item past its page", func(t *testing.T) string {
			return writeDockerTar(t, imageOf(t, tarBytes(t, file("var/lib/rpm/Packages", bdbItemPastPage(t, rpmDB(t, "Packages"))))))
		}, inventory.Options{}, "var/lib/rpm/Packages: malformed package database: Berkeley DB: page 1: item at offset 65520"},
		{"rpm database looping", func(t *testing.T) string {
			// Page 2, the root of the Packages table, is an interior page: its rightmost
			// child becomes itself.
			db := []byte(rpmDB(t, "rpmdb-512.sqlite"))
			copy(db[512+8:], []byte{0, 0, 0, 2})
			return writeDockerTar(t, imageOf(t, tarBytes(t, file("usr/lib/sysimage/rpm/rpmdb.sqlite", string(db)))))
		}, inventory.Options{}, "usr/lib/sysimage/rpm/rpmdb.sqlite: malformed package database: sqlite: page 2 is linked twice"},
		{"large file that is no rpm database, spooled", func(t *testing.T) string {
			return rawDockerTar(t, gzipZeros(t, "var/lib/rpm/Packages.db", 20<<20))
		}, inventory.Options{}, "var/lib/rpm/Packages.db: malformed package database: not an rpm database"},
		{"rpm database over the limit", func(t *testing.T) string {
			return writeDockerTar(t, imageOf(t, tarBytes(t, file("var/lib/rpm/rpmdb.sqlite", rpmDB(t, "rpmdb.sqlite")))))
		}, inventory.Options{MaxBinaryBytes: 4096}, "var/lib/rpm/rpmdb.sqlite is 233472 bytes, over the limit of 4096"},
		{"garbage package-lock", func(t *testing.T) string {
			return writeDockerTar(t, imageOf(t, tarBytes(t, file("app/package-lock.json", "{\"packages\": [1, 2"))))
		}, inventory.Options{}, "app/package-lock.json: malformed package database"},
		{"garbage in lenient metadata is skipped", func(t *testing.T) string {
			return writeDockerTar(t, imageOf(t, tarBytes(t,
				file("app/node_modules/x/package.json", "\xff\xfe not json"),
				file("x.dist-info/METADATA", "\x00\x00\x00"),
				file("lib/x.jar", "PK\x03\x04 not really a zip"),
				exe("bin/fake", "\x7fELF but not really"),
			)))
		}, inventory.Options{}, ""},
		{"diff id mismatch", func(t *testing.T) string {
			p := rawDockerTar(t, tarBytes(t, file("a", "1")))
			return rewriteDiffID(t, p)
		}, inventory.Options{}, "does not match its diff id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			tt.limits.TempDir = tmp
			archive := tt.archive(t)
			var peak atomic.Uint64
			done := make(chan struct{})
			go func() {
				var ms runtime.MemStats
				for {
					runtime.ReadMemStats(&ms)
					if ms.HeapInuse > peak.Load() {
						peak.Store(ms.HeapInuse)
					}
					select {
					case <-done:
						return
					case <-time.After(5 * time.Millisecond):
					}
				}
			}()
			start := time.Now()
			var out bytes.Buffer
			code, err := Run(t.Context(), ScanOptions{Archive: archive, VulnDB: dbDir, Format: "json", Limits: tt.limits}, &out)
			close(done)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("scan: %v", err)
			case tt.wantErr != "":
				if err == nil || code != ExitFailed || !strings.HasPrefix(err.Error(), "scan failed: ") || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("code %d, err %v; want ExitFailed and %q", code, err, tt.wantErr)
				}
			}
			if el := time.Since(start); el > 60*time.Second {
				t.Errorf("scan took %v", el)
			}
			if p := peak.Load(); p > 400<<20 {
				t.Errorf("heap in use peaked at %d MiB", p>>20)
			}
			if left, _ := os.ReadDir(tmp); len(left) > 0 {
				t.Errorf("temporary files left behind: %v", left)
			}
			if in, _ := os.ReadDir(canary); len(in) > 0 {
				t.Errorf("files written outside the temp dir: %v", in)
			}
		})
	}
}

// bdbItemPastPage points the first value item of the first hash page of a Berkeley DB
// database past the end of its page: the two bytes that make go-rpmdb panic in a goroutine
// of its own.
func bdbItemPastPage(t *testing.T, db string) string {
	t.Helper()
	b := []byte(db)
	size := int(binary.LittleEndian.Uint32(b[20:]))
	for off := size; off+size <= len(b); off += size {
		if b[off+25] == 13 { // a hash page
			binary.LittleEndian.PutUint16(b[off+26+2:], 0xfff0)
			return string(b)
		}
	}
	t.Fatal("no hash page")
	return ""
}

// rewriteDiffID changes the first DiffID in a raw docker tarball's config.
func rewriteDiffID(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var entries []entry
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		if hdr.Name == "config.json" {
			var cfg map[string]any
			json.Unmarshal(b, &cfg)
			ids := cfg["rootfs"].(map[string]any)["diff_ids"].([]any)
			ids[0] = "sha256:" + strings.Repeat("0", 64)
			b, _ = json.Marshal(cfg)
		}
		entries = append(entries, file(hdr.Name, string(b)))
	}
	out := filepath.Join(t.TempDir(), "mismatch.tar")
	if err := os.WriteFile(out, tarBytes(t, entries...), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestOCILayoutTarRejectsLinks(t *testing.T) {
	canary := t.TempDir()
	for _, e := range []entry{
		symlink("blobs", canary),
		file("../escape", "x"),
		file("/abs", "x"),
	} {
		p := filepath.Join(t.TempDir(), "layout.tar")
		os.WriteFile(p, tarBytes(t, file("oci-layout", `{"imageLayoutVersion":"1.0.0"}`), file("index.json", `{"schemaVersion":2,"manifests":[]}`), e), 0o600)
		tmp := t.TempDir()
		if _, err := OpenArchive(t.Context(), p, tmp); err == nil {
			t.Errorf("entry %q: OpenArchive succeeded", e.name)
		}
		if left, _ := os.ReadDir(tmp); len(left) > 0 {
			t.Errorf("entry %q: left %v in the temp dir", e.name, left)
		}
	}
	if in, _ := os.ReadDir(canary); len(in) > 0 {
		t.Errorf("written outside the temp dir: %v", in)
	}
}
