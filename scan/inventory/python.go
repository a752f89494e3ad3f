package inventory

import (
	"bytes"
	"strings"
)

// ParsePythonMetadata reads the headers of a Python distribution's METADATA or PKG-INFO file
// and returns the distribution, or nothing without Name and Version.
func ParsePythonMetadata(data []byte) []Package {
	var name, version string
	for _, raw := range bytes.Split(data, []byte("\n")) {
		line := strings.TrimRight(string(raw), "\r")
		if line == "" {
			break // end of the headers; the body is the description
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.ToLower(k) {
		case "name":
			name = strings.TrimSpace(v)
		case "version":
			version = strings.TrimSpace(v)
		}
	}
	if name == "" || version == "" {
		return nil
	}
	return []Package{{Name: name, Version: version, Ecosystem: EcosystemPyPI, Type: TypePython}}
}
