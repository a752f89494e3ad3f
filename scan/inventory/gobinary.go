package inventory

import (
	"debug/buildinfo"
	"io"
	"strings"
)

// ParseGoBinary reads the build information of a Go executable: the main module, each
// dependency (its replacement when replaced) and the Go standard library as package
// "stdlib". Versions lose their "v" prefix, as OSV's Go records write them. It returns
// nothing for files that are not Go executables.
func ParseGoBinary(r io.ReaderAt) []Package {
	bi, err := buildinfo.Read(r)
	if err != nil {
		return nil
	}
	var pkgs []Package
	add := func(name, version string) {
		if name == "" || version == "" {
			return
		}
		pkgs = append(pkgs, Package{Name: name, Version: strings.TrimPrefix(version, "v"), Ecosystem: EcosystemGo, Type: TypeGoBinary})
	}
	if v := goStdlibVersion(bi.GoVersion); v != "" {
		add("stdlib", v)
	}
	add(bi.Main.Path, bi.Main.Version)
	for _, d := range bi.Deps {
		if d.Replace != nil {
			d = d.Replace
		}
		add(d.Path, d.Version)
	}
	return pkgs
}

// goStdlibVersion turns "go1.22.1 X:boringcrypto" into "1.22.1" and "go1.21" into "1.21.0";
// development toolchains give "".
func goStdlibVersion(v string) string {
	v, _, _ = strings.Cut(v, " ")
	v, ok := strings.CutPrefix(v, "go")
	if !ok || v == "" || strings.HasPrefix(v, "devel") {
		return ""
	}
	if strings.Count(v, ".") == 1 && !strings.ContainsAny(v, "-abcdefghijklmnopqrstuvwxyz") {
		v += ".0"
	}
	return v
}
