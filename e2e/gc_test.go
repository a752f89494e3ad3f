package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/minio/minio-go/v7"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/portcullis/portcullis/storage/miniotest"
)

// The garbage collection suite runs `registry gc` (the real CLI, with the
// configuration file the serving registry uses) beside a serving registry,
// with real clients pushing, signing and attaching, and looks at the storage
// backend itself to see what the collector removed.

// gcE2EBackends are the storage backends each test runs on. The tests set up
// the storage themselves rather than through backends(): they read the
// filesystem root and the bucket directly.
var gcE2EBackends = []string{"filesystem", "s3"}

// gcE2EStore is a registry whose storage the test can inspect: the
// configuration file `registry serve` and `registry gc` share, and listings
// of what the backend holds.
type gcE2EStore struct {
	reg *Registry
	// config is the configuration file the registry serves with; its gc
	// section has grace 0s and no background collector.
	config string
	// env holds the backend's credentials, as operators pass them.
	env []string
	// head is the configuration without the gc section, to write variants.
	head string
	// root is the filesystem storage root ("" on S3).
	root string
	// minio and bucket are the S3 bucket (nil on the filesystem).
	minio  *minio.Client
	bucket string
}

// gcE2EStart starts a registry on the named backend with extra appended to
// its configuration (top-level keys other than storage, dataDir and gc).
// The filesystem storage root is its own directory, apart from the serving
// registry's data directory (--data, which holds node-local state), so that
// `registry gc` shares the storage and nothing else.
func gcE2EStart(t *testing.T, backend, extra string) *gcE2EStore {
	t.Helper()
	s := &gcE2EStore{}
	head := "version: 1\ndataDir: " + t.TempDir() + "\n"
	switch backend {
	case "filesystem":
		s.root = t.TempDir()
		head += "storage:\n  filesystem:\n    rootDirectory: " + s.root + "\n"
	case "s3":
		srv := miniotest.Start(t)
		s.bucket = srv.NewBucket(t)
		s.minio = srv.Client(t)
		head += fmt.Sprintf("storage:\n  s3:\n    endpoint: %s\n    region: us-east-1\n    bucket: %s\n", srv.Endpoint, s.bucket)
		s.env = []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey}
	default:
		t.Fatalf("unknown backend %q", backend)
	}
	s.head = head + extra
	s.config = s.configWithGrace(t, "0s")
	s.reg = startRegistry(t, startOptions{env: s.env, args: []string{"--config", s.config}})
	return s
}

// gcE2EEach runs fn in a parallel subtest per backend, on a registry
// started with extra appended to its configuration.
func gcE2EEach(t *testing.T, extra string, fn func(t *testing.T, s *gcE2EStore)) {
	t.Helper()
	for _, b := range gcE2EBackends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			fn(t, gcE2EStart(t, b, extra))
		})
	}
}

// configWithGrace writes the registry's configuration with another grace
// period and returns the file's path.
func (s *gcE2EStore) configWithGrace(t *testing.T, grace string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "config.yml")
	writeFile(t, f, s.head+"gc:\n  interval: 0s\n  grace: "+grace+"\n")
	return f
}

// gcE2EReport is the Report `registry gc --json` prints.
type gcE2EReport struct {
	ID               string         `json:"id"`
	DryRun           bool           `json:"dryRun"`
	Tags             gcE2ECounts    `json:"tags"`
	Manifests        gcE2ECounts    `json:"manifests"`
	Blobs            gcE2ECounts    `json:"blobs"`
	Uploads          gcE2ECounts    `json:"uploads"`
	BytesReclaimed   int64          `json:"bytesReclaimed"`
	Deleted          []gcE2EDeleted `json:"deleted"`
	DeletedTruncated bool           `json:"deletedTruncated"`
	Error            string         `json:"error"`
}

type gcE2ECounts struct {
	Kept    int `json:"kept"`
	Deleted int `json:"deleted"`
	Spared  int `json:"spared"`
}

// gcE2EDeleted is one entry of a report's deleted list.
type gcE2EDeleted struct {
	Kind       string `json:"kind"`
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	Digest     string `json:"digest"`
	Upload     string `json:"upload"`
	Size       int64  `json:"size"`
	Reason     string `json:"reason"`
}

func (d gcE2EDeleted) key() string {
	return d.Kind + " " + d.Repository + " " + d.Digest + " " + d.Tag + d.Upload
}

// keys returns the report's deleted entries as sorted "kind repo digest tag"
// strings.
func (r gcE2EReport) keys() []string {
	var out []string
	for _, d := range r.Deleted {
		out = append(out, d.key())
	}
	sort.Strings(out)
	return out
}

// find returns the deleted entry of that kind and digest (or tag, for
// tags) in repo ("" for blobs).
func (r gcE2EReport) find(kind, repo, ref string) (gcE2EDeleted, bool) {
	for _, d := range r.Deleted {
		if d.Kind == kind && d.Repository == repo && (d.Digest == ref || kind == "tag" && d.Tag == ref) {
			return d, true
		}
	}
	return gcE2EDeleted{}, false
}

// gc runs `registry gc --config cfg --json` with extra flags and returns its
// report. A failed run fails the test; so does a report whose deleted list
// disagrees with its counts.
func (s *gcE2EStore) gc(t *testing.T, cfg string, extra ...string) gcE2EReport {
	t.Helper()
	args := append([]string{"gc", "--config", cfg, "--json"}, extra...)
	// A working directory of its own: nothing relative lands in the source tree.
	out, err := runDirErr(t.TempDir(), s.env, registryBin, args...)
	if err != nil {
		t.Fatalf("registry %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	var r gcE2EReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("registry gc --json printed no report: %v\n%s", err, out)
	}
	if r.ID == "" || r.Error != "" {
		t.Fatalf("registry gc: report %+v", r)
	}
	if !r.DeletedTruncated {
		if n := r.Tags.Deleted + r.Manifests.Deleted + r.Blobs.Deleted + r.Uploads.Deleted; n != len(r.Deleted) {
			t.Errorf("report %s counts %d deletions and lists %d:\n%s", r.ID, n, len(r.Deleted), strings.Join(r.keys(), "\n"))
		}
	}
	return r
}

// blobs returns the blobs in the backend (blob digest → size), read from
// distribution's layout under docker/registry/v2/blobs. Manifests are blobs
// there too.
func (s *gcE2EStore) blobs(t *testing.T) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	add := func(rel string, size int64) {
		// rel: sha256/ab/abcd…/data
		parts := strings.Split(rel, "/")
		if len(parts) == 4 && parts[3] == "data" {
			out[parts[0]+":"+parts[2]] = size
		}
	}
	const prefix = "docker/registry/v2/blobs/"
	if s.minio != nil {
		for o := range s.minio.ListObjects(context.Background(), s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
			if o.Err != nil {
				t.Fatalf("list blobs: %v", o.Err)
			}
			add(strings.TrimPrefix(o.Key, prefix), o.Size)
		}
		return out
	}
	dir := filepath.Join(s.root, prefix)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			add(filepath.ToSlash(rel), info.Size())
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("list blobs: %v", err)
	}
	return out
}

// uploads returns what is left of upload sessions: files under any
// repository's _uploads directory, and on S3 also pending writer state and
// incomplete multipart uploads.
func (s *gcE2EStore) uploads(t *testing.T) []string {
	t.Helper()
	var out []string
	if s.minio != nil {
		ctx := context.Background()
		for o := range s.minio.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Recursive: true}) {
			if o.Err != nil {
				t.Fatalf("list bucket: %v", o.Err)
			}
			if strings.Contains(o.Key, "/_uploads/") || strings.HasPrefix(o.Key, "~pending/") {
				out = append(out, o.Key)
			}
		}
		for u := range s.minio.ListIncompleteUploads(ctx, s.bucket, "", true) {
			if u.Err != nil {
				t.Fatalf("list multipart uploads: %v", u.Err)
			}
			out = append(out, "multipart upload of "+u.Key)
		}
		return out
	}
	err := filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.Contains(filepath.ToSlash(p), "/_uploads/") {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("list uploads: %v", err)
	}
	return out
}

// usage returns the space the storage takes: on the filesystem the disk
// blocks under the root (as du counts them), on S3 the sum of the bucket's
// object sizes.
func (s *gcE2EStore) usage(t *testing.T) int64 {
	t.Helper()
	var n int64
	if s.minio != nil {
		for o := range s.minio.ListObjects(context.Background(), s.bucket, minio.ListObjectsOptions{Recursive: true}) {
			if o.Err != nil {
				t.Fatalf("list bucket: %v", o.Err)
			}
			n += o.Size
		}
		return n
	}
	err := filepath.WalkDir(s.root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		t.Fatalf("du %s: %v", s.root, err)
	}
	return n
}

// status returns the status of a request to the registry, with a bearer
// token unless token is "".
func (s *gcE2EStore) status(t *testing.T, method, path, token string) int {
	t.Helper()
	req, err := http.NewRequest(method, s.reg.URL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", manifestAccept)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// wantStatus checks that each of paths answers want to a GET.
func (s *gcE2EStore) wantStatus(t *testing.T, want int, token, what string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if got := s.status(t, http.MethodGet, p, token); got != want {
			t.Errorf("%s: GET %s = %d, want %d", what, p, got, want)
		}
	}
}

// gcE2EReferrer is one entry of a referrers index.
type gcE2EReferrer struct {
	Digest       string `json:"digest"`
	ArtifactType string `json:"artifactType"`
}

// referrers returns the referrers API's answer for repo@d.
func (s *gcE2EStore) referrers(t *testing.T, repo, d string) []gcE2EReferrer {
	t.Helper()
	resp, err := http.Get(s.reg.URL() + "/v2/" + repo + "/referrers/" + d)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusNotFound {
		return nil
	}
	var idx struct {
		Manifests []gcE2EReferrer `json:"manifests"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &idx) != nil {
		t.Fatalf("referrers of %s@%s: %d %s", repo, d, resp.StatusCode, trim(body))
	}
	return idx.Manifests
}

// gcE2ERuns reads GET /api/v1/gc/runs with a bearer token unless token is
// "". It returns the status and, on 200, the runs as raw JSON objects.
func gcE2ERuns(t *testing.T, reg *Registry, token string) (int, []map[string]json.RawMessage) {
	t.Helper()
	code, body, _ := apiCall(t, http.MethodGet, reg.URL()+"/api/v1/gc/runs", token, "")
	if code != http.StatusOK {
		return code, nil
	}
	var runs struct {
		Runs []map[string]json.RawMessage `json:"runs"`
	}
	if err := json.Unmarshal(body, &runs); err != nil {
		t.Fatalf("gc runs: %v\n%s", err, trim(body))
	}
	return code, runs.Runs
}

// gcE2EWantRuns checks that the runs API lists the given reports first,
// newest first, with their dry-run flags and without deleted lists.
func gcE2EWantRuns(t *testing.T, runs []map[string]json.RawMessage, newestFirst ...gcE2EReport) {
	t.Helper()
	if len(runs) < len(newestFirst) {
		t.Fatalf("gc runs API lists %d runs, want at least %d", len(runs), len(newestFirst))
	}
	for i, want := range newestFirst {
		var got struct {
			ID     string `json:"id"`
			DryRun bool   `json:"dryRun"`
		}
		raw, _ := json.Marshal(runs[i])
		_ = json.Unmarshal(raw, &got)
		if got.ID != want.ID || got.DryRun != want.DryRun {
			t.Errorf("gc runs[%d] = %+v, want id %s dryRun %v", i, got, want.ID, want.DryRun)
		}
		if _, ok := runs[i]["deleted"]; ok {
			t.Errorf("gc runs[%d] carries its deleted list", i)
		}
	}
}

// gcE2EPush pushes a fresh image to repo (host/name) with the tag, or by
// digest when tag is "", and returns its digest and the digests of its
// config and layers.
func gcE2EPush(t *testing.T, env []string, crane, repo, tag string) (string, []string) {
	t.Helper()
	img, tarPath := imageTarball(t)
	d := imageDigest(t, img)
	target := repo + "@" + d
	if tag != "" {
		target = repo + ":" + tag
	}
	run(t, env, crane, "push", "--insecure", tarPath, target)
	return d, gcE2EBlobsOf(t, img)
}

// gcE2EBlobsOf returns the digests of an image's config and layers.
func gcE2EBlobsOf(t *testing.T, img v1.Image) []string {
	t.Helper()
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	out := []string{cfg.String()}
	for _, l := range mustLayers(t, img) {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d.String())
	}
	return out
}

// gcE2EBlobPaths returns /v2/repo/blobs/<d> for each digest.
func gcE2EBlobPaths(repo string, digests ...string) []string {
	var out []string
	for _, d := range digests {
		out = append(out, "/v2/"+repo+"/blobs/"+d)
	}
	return out
}

// gcE2EManifestPaths returns /v2/repo/manifests/<ref> for each reference.
func gcE2EManifestPaths(repo string, refs ...string) []string {
	var out []string
	for _, r := range refs {
		out = append(out, "/v2/"+repo+"/manifests/"+r)
	}
	return out
}

// abandonUpload starts an upload in repo, sends n bytes and never finishes
// it. On the filesystem it then dates the session's files an hour back, so
// that it counts as abandoned (the collector leaves a session alone until
// it has been idle for 16 minutes, whatever the grace period), and reports
// true; an object store's modification times cannot be set, so on S3 the
// session stays fresh and it reports false.
func (s *gcE2EStore) abandonUpload(t *testing.T, repo string, n int) bool {
	t.Helper()
	loc := s.reg.startUpload(t, repo)
	chunk := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{byte(n)}).Read(chunk)
	if status, _ := patch(t, s.reg, loc, 0, chunk); status != http.StatusAccepted {
		t.Fatalf("PATCH upload: %d", status)
	}
	if s.root == "" {
		return false
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(s.root, "docker/registry/v2/repositories", repo, "_uploads", path.Base(u.Path))
	old := time.Now().Add(-time.Hour)
	err = filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, old, old)
	})
	if err != nil {
		t.Fatalf("date the upload session back: %v", err)
	}
	return true
}

func gcE2EKeys(m map[string]int64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestGCE2EReferrers: signatures (cosign bundle and legacy .sig tag), an
// SBOM attached as a referrer and the SBOM's own signature survive a
// collection while their image is tagged, and go with it, blobs and all,
// once the tag is deleted.
func TestGCE2EReferrers(t *testing.T) {
	t.Parallel()
	crane, oras := tool(t, "crane"), tool(t, "oras")
	key, pub := cosignKeys(t)
	gcE2EEach(t, "", func(t *testing.T, s *gcE2EStore) {
		h, repo := s.reg.Addr, "signed/app"
		empty := s.blobs(t)

		d, _ := gcE2EPush(t, nil, crane, h+"/"+repo, "v1")
		ref := h + "/" + repo + "@" + d
		cosignSign(t, nil, key, ref)
		cosignSign(t, nil, key, ref, "--new-bundle-format=false")
		sigTag := "sha256-" + strings.TrimPrefix(d, "sha256:") + ".sig"
		legacySig := strings.TrimSpace(run(t, nil, crane, "digest", "--insecure", h+"/"+repo+":"+sigTag))
		work := t.TempDir()
		writeFile(t, filepath.Join(work, "sbom.json"), `{"spdxVersion":"SPDX-2.3","name":"gc-e2e"}`)
		runIn(t, work, oras, "attach", "--plain-http", "--artifact-type", "application/spdx+json", ref, "sbom.json")
		var sbom, sig string
		for _, r := range s.referrers(t, repo, d) {
			switch {
			case r.ArtifactType == "application/spdx+json":
				sbom = r.Digest
			case strings.Contains(r.ArtifactType, "sigstore"):
				sig = r.Digest
			}
		}
		if sbom == "" || sig == "" {
			t.Fatalf("referrers of the image: %+v, want an SBOM and a cosign bundle", s.referrers(t, repo, d))
		}
		cosignSign(t, nil, key, h+"/"+repo+"@"+sbom)
		sbomRefs := s.referrers(t, repo, sbom)
		if len(sbomRefs) != 1 {
			t.Fatalf("referrers of the SBOM: %+v, want its signature", sbomRefs)
		}
		sbomSig := sbomRefs[0].Digest
		pushed := s.blobs(t)

		first := s.gc(t, s.config)
		if first.Tags.Deleted+first.Manifests.Deleted+first.Blobs.Deleted != 0 {
			t.Errorf("collection with everything tagged deleted: %s", strings.Join(first.keys(), "\n"))
		}
		if diff := cmp.Diff(gcE2EKeys(pushed), gcE2EKeys(s.blobs(t))); diff != "" {
			t.Errorf("blobs changed by a collection with everything tagged (-before +after):\n%s", diff)
		}
		for _, r := range []string{ref, h + "/" + repo + "@" + sbom} {
			if out, err := cosignVerify(t, nil, pub, r); err != nil {
				t.Errorf("cosign verify %s after the collection: %v\n%s", r, err, out)
			}
		}
		got := s.referrers(t, repo, d)
		for _, want := range []string{sbom, sig} {
			if !slices.ContainsFunc(got, func(r gcE2EReferrer) bool { return r.Digest == want }) {
				t.Errorf("referrers of the image after the collection lack %s: %+v", want, got)
			}
		}
		if got := s.referrers(t, repo, sbom); len(got) != 1 || got[0].Digest != sbomSig {
			t.Errorf("referrers of the SBOM after the collection: %+v, want %s", got, sbomSig)
		}
		s.wantStatus(t, http.StatusOK, "", "legacy signature tag", gcE2EManifestPaths(repo, sigTag)...)

		run(t, nil, crane, "delete", "--insecure", h+"/"+repo+":v1")
		second := s.gc(t, s.config)
		if diff := cmp.Diff(gcE2EKeys(empty), gcE2EKeys(s.blobs(t))); diff != "" {
			t.Errorf("blobs left after the image's tag was deleted (-want +got):\n%s", diff)
		}
		var gone []string
		for b := range pushed {
			if _, ok := empty[b]; !ok {
				gone = append(gone, b)
			}
		}
		s.wantStatus(t, http.StatusNotFound, "", "blob of a deleted image", gcE2EBlobPaths(repo, gone...)...)
		s.wantStatus(t, http.StatusNotFound, "", "manifest of a deleted image", gcE2EManifestPaths(repo, d, sig, sbom, sbomSig, sigTag, legacySig)...)
		if got := s.referrers(t, repo, d); len(got) != 0 {
			t.Errorf("referrers of the deleted image: %+v", got)
		}
		for _, c := range []struct{ digest, reason string }{
			// The legacy signature has no subject field: its tag
			// (sha256-<hex>.sig) names the subject.
			{d, "untagged"}, {sig, "subject deleted"}, {sbom, "subject deleted"}, {sbomSig, "subject deleted"}, {legacySig, "subject deleted"},
		} {
			e, ok := second.find("manifest", repo, c.digest)
			if !ok {
				t.Errorf("report lacks manifest %s:\n%s", c.digest, strings.Join(second.keys(), "\n"))
			} else if e.Reason != c.reason {
				t.Errorf("manifest %s deleted for %q, want %q", c.digest, e.Reason, c.reason)
			}
		}
		if e, ok := second.find("tag", repo, sigTag); !ok || e.Reason != "subject deleted" {
			t.Errorf("report entry for the legacy signature tag %s: %+v (found %v)", sigTag, e, ok)
		}

		status, runs := gcE2ERuns(t, s.reg, "")
		if status != http.StatusOK {
			t.Fatalf("GET /api/v1/gc/runs without auth: %d", status)
		}
		gcE2EWantRuns(t, runs, second, first)
	})
}

// TestGCE2EIndexAndGrace: a tagged index keeps its children (untagged
// themselves) and their blobs; an untagged manifest younger than the grace
// period survives, and goes once the grace is 0s.
func TestGCE2EIndexAndGrace(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	gcE2EEach(t, "", func(t *testing.T, s *gcE2EStore) {
		h, repo := s.reg.Addr, "multi/app"
		c1, c1Blobs := gcE2EPush(t, nil, crane, h+"/"+repo, "")
		c2, c2Blobs := gcE2EPush(t, nil, crane, h+"/"+repo, "")
		run(t, nil, crane, "index", "append", "--insecure", "-m", h+"/"+repo+"@"+c1, "-m", h+"/"+repo+"@"+c2, "-t", h+"/"+repo+":v1")
		idx := strings.TrimSpace(run(t, nil, crane, "digest", "--insecure", h+"/"+repo+":v1"))
		u, uBlobs := gcE2EPush(t, nil, crane, h+"/"+repo, "")

		young := s.gc(t, s.configWithGrace(t, "1h"))
		if young.Manifests.Deleted+young.Blobs.Deleted != 0 {
			t.Errorf("grace 1h deleted what was pushed just now:\n%s", strings.Join(young.keys(), "\n"))
		}
		s.wantStatus(t, http.StatusOK, "", "untagged manifest within the grace period", gcE2EManifestPaths(repo, u)...)
		s.wantStatus(t, http.StatusOK, "", "blob of an untagged manifest within the grace period", gcE2EBlobPaths(repo, uBlobs...)...)

		old := s.gc(t, s.config)
		s.wantStatus(t, http.StatusNotFound, "", "untagged manifest with grace 0s", gcE2EManifestPaths(repo, u)...)
		s.wantStatus(t, http.StatusNotFound, "", "blob of an untagged manifest with grace 0s", gcE2EBlobPaths(repo, uBlobs...)...)
		if e, ok := old.find("manifest", repo, u); !ok || e.Reason != "untagged" {
			t.Errorf("report entry for the untagged manifest: %+v (found %v)", e, ok)
		}
		s.wantStatus(t, http.StatusOK, "", "tagged index and its children", gcE2EManifestPaths(repo, "v1", idx, c1, c2)...)
		s.wantStatus(t, http.StatusOK, "", "blobs of an index's children", gcE2EBlobPaths(repo, append(c1Blobs, c2Blobs...)...)...)
		for _, keep := range append([]string{idx, c1, c2}, append(c1Blobs, c2Blobs...)...) {
			for _, e := range old.Deleted {
				if e.Digest == keep {
					t.Errorf("report deletes %s, which the tagged index holds", e.key())
				}
			}
		}
	})
}

// TestGCE2EDryRun: a dry run lists exactly what the real run after it
// deletes, and deletes nothing.
func TestGCE2EDryRun(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	gcE2EEach(t, "", func(t *testing.T, s *gcE2EStore) {
		h, repo := s.reg.Addr, "dry/app"
		keep, keepBlobs := gcE2EPush(t, nil, crane, h+"/"+repo, "keep")
		untagged, _ := gcE2EPush(t, nil, crane, h+"/"+repo, "gone")
		run(t, nil, crane, "delete", "--insecure", h+"/"+repo+":gone")
		byDigest, _ := gcE2EPush(t, nil, crane, h+"/"+repo, "")
		aged := s.abandonUpload(t, repo, 64<<10)
		blobs, uploads := s.blobs(t), s.uploads(t)
		if len(uploads) == 0 {
			t.Fatal("the abandoned upload left nothing in the backend")
		}

		dry := s.gc(t, s.config, "--dry-run")
		if !dry.DryRun {
			t.Error("dry run reports dryRun false")
		}
		if diff := cmp.Diff(gcE2EKeys(blobs), gcE2EKeys(s.blobs(t))); diff != "" {
			t.Errorf("the dry run changed the blobs (-before +after):\n%s", diff)
		}
		if diff := cmp.Diff(uploads, s.uploads(t)); diff != "" {
			t.Errorf("the dry run changed the uploads (-before +after):\n%s", diff)
		}
		s.wantStatus(t, http.StatusOK, "", "manifest after the dry run", gcE2EManifestPaths(repo, untagged, byDigest)...)

		sweep := s.gc(t, s.config)
		if sweep.DryRun {
			t.Error("real run reports dryRun true")
		}
		if diff := cmp.Diff(dry.keys(), sweep.keys()); diff != "" {
			t.Errorf("dry run and real run differ (-dry +real):\n%s", diff)
		}
		if dry.Tags != sweep.Tags || dry.Manifests != sweep.Manifests || dry.Blobs != sweep.Blobs || dry.Uploads != sweep.Uploads {
			t.Errorf("counts: dry run %+v %+v %+v %+v, real run %+v %+v %+v %+v",
				dry.Tags, dry.Manifests, dry.Blobs, dry.Uploads, sweep.Tags, sweep.Manifests, sweep.Blobs, sweep.Uploads)
		}
		for _, d := range []string{untagged, byDigest} {
			if _, ok := sweep.find("manifest", repo, d); !ok {
				t.Errorf("report lacks the untagged manifest %s", d)
			}
		}
		if aged {
			if sweep.Uploads.Deleted != 1 {
				t.Errorf("report deletes %d uploads, want the abandoned one", sweep.Uploads.Deleted)
			}
			if left := s.uploads(t); len(left) != 0 {
				t.Errorf("uploads left after the real run: %v", left)
			}
		}
		// What left the backend is what the report lists: its blobs,
		// and the manifests (which distribution stores as blobs).
		after := s.blobs(t)
		listed := map[string]string{}
		for _, e := range sweep.Deleted {
			if e.Kind == "blob" || e.Kind == "manifest" {
				listed[e.Digest] = e.Kind
			}
		}
		for d := range blobs {
			if _, ok := after[d]; !ok && listed[d] == "" {
				t.Errorf("blob %s left the backend without a report entry", d)
			}
		}
		for d, kind := range listed {
			if _, ok := after[d]; ok && kind == "blob" {
				t.Errorf("report deletes blob %s, still in the backend", d)
			}
		}
		s.wantStatus(t, http.StatusOK, "", "tagged image", gcE2EManifestPaths(repo, "keep", keep)...)
		s.wantStatus(t, http.StatusOK, "", "tagged image's blobs", gcE2EBlobPaths(repo, keepBlobs...)...)
	})
}

// TestGCE2ERetention: a policy keeping v* and the 20 most recently pushed
// tags deletes the older builds and their manifests; a tag an immutable tag
// rule holds survives; repositories no policy matches keep every tag. With
// auth on, the runs API answers only callers granted the catalog.
func TestGCE2ERetention(t *testing.T) {
	t.Parallel()
	crane := tool(t, "crane")
	extra := usersAliceAndBob(t, `    - name: alice-all
      subjects: [user:alice]
      repositories: ["**"]
      actions: [pull, push, delete]
    - name: bob-pulls
      subjects: [user:bob]
      repositories: ["**"]
      actions: [pull]
`) + `  catalog: [user:alice]
  tagRules:
    - name: pinned-build
      repositories: ["ci/**"]
      tags: ["build-1"]
      immutable: true
retention:
  policies:
    - repositories: ["ci/**"]
      keep:
        - tags: ["v*"]
        - tags: ["**"]
          mostRecentlyPushed: 20
`
	gcE2EEach(t, extra, func(t *testing.T, s *gcE2EStore) {
		h, repo := s.reg.Addr, "ci/app"
		env := []string{"DOCKER_CONFIG=" + t.TempDir()}
		run(t, env, crane, "auth", "login", "--insecure", h, "-u", "alice", "-p", "alice-pw")

		digests := map[string]string{}
		push := func(tag string) { digests[tag], _ = gcE2EPush(t, env, crane, h+"/"+repo, tag) }
		push("v1.0")
		push("v1.1")
		for i := 1; i <= 10; i++ {
			push(fmt.Sprintf("build-%d", i))
		}
		// The older builds are older by at least a second: object
		// stores keep times to the second.
		time.Sleep(1100 * time.Millisecond)
		for i := 11; i <= 30; i++ {
			push(fmt.Sprintf("build-%d", i))
		}
		other, _ := gcE2EPush(t, env, crane, h+"/other/app", "old")

		dry := s.gc(t, s.config, "--dry-run")
		sweep := s.gc(t, s.config)

		want := []string{"build-1", "v1.0", "v1.1"}
		var wantDeleted []string
		for i := 2; i <= 30; i++ {
			tag := fmt.Sprintf("build-%d", i)
			if i <= 10 {
				wantDeleted = append(wantDeleted, tag)
			} else {
				want = append(want, tag)
			}
		}
		got := strings.Fields(run(t, env, crane, "ls", "--insecure", h+"/"+repo))
		sort.Strings(got)
		sort.Strings(want)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("tags after retention (-want +got):\n%s", diff)
		}
		var deletedTags []string
		for _, e := range sweep.Deleted {
			if e.Kind == "tag" {
				deletedTags = append(deletedTags, e.Repository+":"+e.Tag)
				if e.Reason != "retention: not kept by any rule" {
					t.Errorf("tag %s deleted for %q", e.Tag, e.Reason)
				}
			}
		}
		sort.Strings(deletedTags)
		var wantTags []string
		for _, tag := range wantDeleted {
			wantTags = append(wantTags, repo+":"+tag)
		}
		sort.Strings(wantTags)
		if diff := cmp.Diff(wantTags, deletedTags); diff != "" {
			t.Errorf("tags the report deletes (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(dry.keys(), sweep.keys()); diff != "" {
			t.Errorf("dry run and real run differ (-dry +real):\n%s", diff)
		}

		tok := bearer(t, s.reg.URL(), "alice", "alice-pw", "repository:"+repo+":pull")
		for _, tag := range wantDeleted {
			s.wantStatus(t, http.StatusNotFound, tok, "manifest of "+tag, gcE2EManifestPaths(repo, digests[tag])...)
			if _, ok := sweep.find("manifest", repo, digests[tag]); !ok {
				t.Errorf("report lacks the manifest of %s", tag)
			}
		}
		for _, tag := range want {
			s.wantStatus(t, http.StatusOK, tok, "kept tag", gcE2EManifestPaths(repo, tag, digests[tag])...)
		}
		otherTok := bearer(t, s.reg.URL(), "alice", "alice-pw", "repository:other/app:pull")
		s.wantStatus(t, http.StatusOK, otherTok, "repository no policy matches", gcE2EManifestPaths("other/app", "old", other)...)

		if status, _ := gcE2ERuns(t, s.reg, ""); status != http.StatusUnauthorized {
			t.Errorf("GET /api/v1/gc/runs anonymously: %d, want 401", status)
		}
		if status, _ := gcE2ERuns(t, s.reg, bearer(t, s.reg.URL(), "bob", "bob-pw", "registry:catalog:*")); status == http.StatusOK {
			t.Error("GET /api/v1/gc/runs as bob, who may not read the catalog: 200")
		}
		status, runs := gcE2ERuns(t, s.reg, bearer(t, s.reg.URL(), "alice", "alice-pw", "registry:catalog:*"))
		if status != http.StatusOK {
			t.Fatalf("GET /api/v1/gc/runs as alice, who may read the catalog: %d", status)
		}
		gcE2EWantRuns(t, runs, sweep, dry)
	})
}

// gcE2ELayerSize is the size of each of the space test's layers.
const gcE2ELayerSize = 256 << 20

// gcE2EWriteLayer writes size random bytes to path, streamed.
func gcE2EWriteLayer(t *testing.T, path string, seed byte, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := io.CopyN(w, rand.NewChaCha8([32]byte{seed}), size); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(w.Flush(), f.Close()); err != nil {
		t.Fatal(err)
	}
}

// TestGCE2ESpace: after 1 GiB of images is pushed and deleted, a collection
// gives the space back, on disk and in the bucket, and leaves no uploads.
func TestGCE2ESpace(t *testing.T) {
	t.Parallel()
	crane, oras := tool(t, "crane"), tool(t, "oras")
	const images = 4
	layers := t.TempDir()
	for i := range images {
		gcE2EWriteLayer(t, filepath.Join(layers, fmt.Sprintf("layer-%d.bin", i)), byte(i+1), gcE2ELayerSize)
	}
	const total = images * gcE2ELayerSize
	const slack = 4 << 20
	gcE2EEach(t, "", func(t *testing.T, s *gcE2EStore) {
		h := s.reg.Addr
		base := s.usage(t)
		for i := range images {
			runIn(t, layers, oras, "push", "--plain-http", fmt.Sprintf("%s/space/app:%d", h, i),
				fmt.Sprintf("layer-%d.bin:application/vnd.oci.image.layer.v1.tar", i))
		}
		if s.root != "" {
			// Only there can a session be made old enough to be abandoned.
			s.abandonUpload(t, "space/app", 1<<20)
		}
		full := s.usage(t)
		if full-base < total {
			t.Fatalf("storage grew by %d bytes after pushing %d", full-base, total)
		}
		for i := range images {
			run(t, nil, crane, "delete", "--insecure", fmt.Sprintf("%s/space/app:%d", h, i))
		}
		r := s.gc(t, s.config)
		after := s.usage(t)
		t.Logf("storage %d bytes empty, %d full, %d after gc; report reclaims %d bytes", base, full, after, r.BytesReclaimed)
		if freed := full - after; freed < total || freed > total+slack {
			t.Errorf("collection freed %d bytes, want %d (within %d)", freed, total, slack)
		}
		if after-base > slack {
			t.Errorf("storage after collection %d bytes above empty (%d), want within %d", after-base, base, slack)
		}
		if r.BytesReclaimed < total || r.BytesReclaimed > total+slack {
			t.Errorf("report reclaims %d bytes, want %d (within %d)", r.BytesReclaimed, total, slack)
		}
		if left := s.uploads(t); len(left) != 0 {
			t.Errorf("uploads left after the collection: %v", left)
		}
		var blobBytes int64
		for _, n := range s.blobs(t) {
			blobBytes += n
		}
		if blobBytes > slack {
			t.Errorf("blobs left after the collection: %d bytes", blobBytes)
		}
	})
}
