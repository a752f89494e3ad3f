package inventory

import (
	"archive/zip"
	"bytes"
	"io"
	"path"
	"strings"
)

// maxJavaDepth bounds how deep archives nested in archives (WEB-INF/lib, BOOT-INF/lib) are read.
const maxJavaDepth = 3

// ParseJavaArchive reads a jar, war or ear file: every META-INF/maven/<group>/<artifact>/
// pom.properties names a Maven package "groupId:artifactId"; an archive without one falls
// back to its META-INF/MANIFEST.MF (Implementation-Vendor-Id, Implementation-Title and
// Implementation-Version). Archives nested in it are read too, each up to maxEntry bytes,
// with at most 8×maxEntry bytes decompressed in all. A file that is not a zip archive gives
// nothing.
func ParseJavaArchive(r io.ReaderAt, size int64, location string, maxEntry int64) []Package {
	budget := 8 * maxEntry
	return parseJava(r, size, maxEntry, &budget, 0)
}

func parseJava(r io.ReaderAt, size, maxEntry int64, budget *int64, depth int) []Package {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil
	}
	read := func(f *zip.File, limit int64) []byte {
		if int64(f.UncompressedSize64) > limit || *budget <= 0 {
			return nil
		}
		rc, err := f.Open()
		if err != nil {
			return nil
		}
		defer rc.Close()
		data, err := io.ReadAll(io.LimitReader(rc, min(limit, *budget)+1))
		*budget -= int64(len(data))
		if err != nil || int64(len(data)) > limit || *budget < 0 {
			return nil
		}
		return data
	}
	var pkgs, nested []Package
	var manifest *zip.File
	for _, f := range zr.File {
		name := f.Name
		switch {
		case strings.HasPrefix(name, "META-INF/maven/") && path.Base(name) == "pom.properties":
			if p, ok := parsePomProperties(read(f, 1<<20)); ok {
				pkgs = append(pkgs, p)
			}
		case name == "META-INF/MANIFEST.MF":
			manifest = f
		case depth < maxJavaDepth && isJavaArchiveName(name):
			if data := read(f, maxEntry); data != nil {
				nested = append(nested, parseJava(bytes.NewReader(data), int64(len(data)), maxEntry, budget, depth+1)...)
			}
		}
	}
	if len(pkgs) == 0 && manifest != nil {
		if p, ok := parseManifest(read(manifest, 1<<20)); ok {
			pkgs = append(pkgs, p)
		}
	}
	return append(pkgs, nested...)
}

func isJavaArchiveName(name string) bool {
	switch strings.ToLower(path.Ext(name)) {
	case ".jar", ".war", ".ear":
		return true
	}
	return false
}

func parsePomProperties(data []byte) (Package, bool) {
	props := map[string]string{}
	for _, raw := range bytes.Split(data, []byte("\n")) {
		line := strings.TrimSpace(string(raw))
		if line == "" || line[0] == '#' || line[0] == '!' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			k, v, ok = strings.Cut(line, ":")
		}
		if ok {
			props[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	g, a, v := props["groupId"], props["artifactId"], props["version"]
	if g == "" || a == "" || v == "" {
		return Package{}, false
	}
	return Package{Name: g + ":" + a, Version: v, Ecosystem: EcosystemMaven, Type: TypeJava}, true
}

func parseManifest(data []byte) (Package, bool) {
	fields := map[string]string{}
	for _, raw := range bytes.Split(data, []byte("\n")) {
		line := strings.TrimRight(string(raw), "\r")
		if line == "" {
			break // main section only
		}
		if k, v, ok := strings.Cut(line, ": "); ok && !strings.HasPrefix(line, " ") {
			fields[k] = strings.TrimSpace(v)
		}
	}
	g, a, v := fields["Implementation-Vendor-Id"], fields["Implementation-Title"], fields["Implementation-Version"]
	if g == "" || a == "" || v == "" || strings.ContainsAny(g+a, " :") {
		return Package{}, false
	}
	return Package{Name: g + ":" + a, Version: v, Ecosystem: EcosystemMaven, Type: TypeJava}, true
}
