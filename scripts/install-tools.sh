#!/usr/bin/env bash
# install-tools.sh builds or installs every pinned tool the test suites drive,
# into a cache outside the clone keyed by tool and version, so a second run is fast.
#
# Prints the bin directory to add to PATH on its last line. Usage:
#   scripts/install-tools.sh [tool ...]     (default: every test tool)
# Environment: PORTCULLIS_TOOLS (cache root, default ~/.cache/portcullis-tools).
set -euo pipefail

root=${PORTCULLIS_TOOLS:-$HOME/.cache/portcullis-tools}
bin="$root/bin"
mkdir -p "$bin"

# Pinned versions. Keep in step with README.md.
CRANE_VERSION=v0.22.1
ORAS_VERSION=v1.3.6
REGCTL_VERSION=v0.11.7
CONFORMANCE_VERSION=v0.0.0-20260831232431-97274622c111
DISTRIBUTION_VERSION=v3.1.2
OSV_SCANNER_VERSION=v2.5.0
HELM_VERSION=v3.22.0
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
COSIGN_VERSION=v3.1.3
NOTATION_VERSION=v1.3.2

log() { echo "install-tools: $*" >&2; }

# go_tool NAME MODULE/PKG VERSION: go install into $root/NAME-VERSION, linked into $bin.
go_tool() {
  local name=$1 pkg=$2 version=$3 dir="$root/$1-$3"
  if [ ! -x "$dir/$name" ]; then
    log "building $name $version"
    mkdir -p "$dir"
    GOBIN="$dir.tmp" CGO_ENABLED=0 go install -trimpath "$pkg@$version"
    mv "$dir.tmp"/* "$dir/$name.new" && mv "$dir/$name.new" "$dir/$name" && rmdir "$dir.tmp"
  fi
  ln -sf "$dir/$name" "$bin/$name"
}

# conformance: the OCI distribution-spec conformance suite is a Go test package;
# compile it into a standalone binary from a scratch module that requires it.
conformance() {
  local dir="$root/conformance-$CONFORMANCE_VERSION"
  if [ ! -x "$dir/conformance.test" ]; then
    log "building conformance $CONFORMANCE_VERSION"
    local work
    work=$(mktemp -d)
    (
      cd "$work"
      go mod init portcullis.local/conformance >/dev/null 2>&1
      cat > tools.go <<'GO'
//go:build tools

package tools

import _ "github.com/opencontainers/distribution-spec/conformance"
GO
      go get "github.com/opencontainers/distribution-spec/conformance@$CONFORMANCE_VERSION" >/dev/null
      go mod tidy -e >/dev/null 2>&1 || true
      go get "github.com/opencontainers/distribution-spec/conformance@$CONFORMANCE_VERSION" >/dev/null
      go test -c -o conformance.test github.com/opencontainers/distribution-spec/conformance
    )
    mkdir -p "$dir"
    mv "$work/conformance.test" "$dir/conformance.test"
    rm -rf "$work"
  fi
  ln -sf "$dir/conformance.test" "$bin/conformance.test"
}

# notation: its module carries replace directives, so `go install pkg@version`
# refuses it; build its command from a scratch module that requires it.
notation() {
  local dir="$root/notation-$NOTATION_VERSION"
  if [ ! -x "$dir/notation" ]; then
    log "building notation $NOTATION_VERSION"
    local work
    work=$(mktemp -d)
    (
      cd "$work"
      go mod init portcullis.local/notation >/dev/null 2>&1
      cat > tools.go <<'GO'
//go:build tools

package tools

import _ "github.com/notaryproject/notation/cmd/notation"
GO
      go get "github.com/notaryproject/notation@$NOTATION_VERSION" >/dev/null
      go mod tidy -e >/dev/null 2>&1 || true
      go get "github.com/notaryproject/notation@$NOTATION_VERSION" >/dev/null
      CGO_ENABLED=0 go build -trimpath -o notation github.com/notaryproject/notation/cmd/notation
    )
    mkdir -p "$dir"
    mv "$work/notation" "$dir/notation"
    rm -rf "$work"
  fi
  ln -sf "$dir/notation" "$bin/notation"
}

# apt_tool NAME PACKAGE: install from Debian's packages when missing.
apt_tool() {
  local name=$1 pkg=$2
  if ! command -v "$name" >/dev/null 2>&1; then
    log "installing $pkg from Debian"
    if [ ! -f "$root/.apt-updated" ]; then
      apt-get update -qq >&2 && touch "$root/.apt-updated"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >&2
  fi
}

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(conformance crane oras regctl helm minio cosign notation osv-scanner skopeo podman)
for t in "${tools[@]}"; do
  case $t in
    conformance) conformance ;;
    crane) go_tool crane github.com/google/go-containerregistry/cmd/crane "$CRANE_VERSION" ;;
    oras) go_tool oras oras.land/oras/cmd/oras "$ORAS_VERSION" ;;
    regctl) go_tool regctl github.com/regclient/regclient/cmd/regctl "$REGCTL_VERSION" ;;
    distribution) go_tool distribution-registry github.com/distribution/distribution/v3/cmd/registry "$DISTRIBUTION_VERSION" ;;
    helm) go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" ;;
    minio) go_tool minio github.com/minio/minio "$MINIO_VERSION" ;;
    cosign) go_tool cosign github.com/sigstore/cosign/v3/cmd/cosign "$COSIGN_VERSION" ;;
    notation) notation ;;
    osv-scanner) go_tool osv-scanner github.com/google/osv-scanner/v2/cmd/osv-scanner "$OSV_SCANNER_VERSION" ;;
    skopeo) apt_tool skopeo skopeo ;;
    podman) apt_tool podman podman ;;
    *) log "unknown tool $t"; exit 2 ;;
  esac
done
echo "$bin"
