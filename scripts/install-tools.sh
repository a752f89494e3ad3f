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

# scratch_tool KEY BIN MODULE VERSION PKG BUILD: build PKG as BIN, cached under
# KEY-VERSION, from a scratch module
# that requires MODULE@VERSION, for tools `go install pkg@version` cannot
# build: the OCI conformance suite is a test package (BUILD is "test"), and
# notation's module carries replace directives (BUILD is "build").
scratch_tool() {
  local key=$1 name=$2 module=$3 version=$4 pkg=$5 build=$6 dir="$root/$1-$4"
  if [ ! -x "$dir/$name" ]; then
    log "building $name $version"
    local work
    work=$(mktemp -d)
    (
      cd "$work"
      go mod init "portcullis.local/$key" >/dev/null 2>&1
      printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$pkg" > tools.go
      go get "$module@$version" >/dev/null
      go mod tidy -e >/dev/null 2>&1 || true
      go get "$module@$version" >/dev/null
      if [ "$build" = test ]; then
        go test -c -o "$name" "$pkg"
      else
        CGO_ENABLED=0 go build -trimpath -o "$name" "$pkg"
      fi
    )
    mkdir -p "$dir"
    mv "$work/$name" "$dir/$name"
    rm -rf "$work"
  fi
  ln -sf "$dir/$name" "$bin/$name"
}

# apt_install PACKAGE: install from Debian's packages.
apt_install() {
  log "installing $1 from Debian"
  if [ ! -f "$root/.apt-updated" ]; then
    apt-get update -qq >&2 && touch "$root/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >&2
}

# apt_tool NAME PACKAGE: install PACKAGE when the command NAME is missing.
apt_tool() {
  command -v "$1" >/dev/null 2>&1 || apt_install "$2"
}

# apt_file FILE PACKAGE: install PACKAGE when FILE is missing.
apt_file() {
  [ -s "$1" ] || apt_install "$2"
}

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(conformance crane oras regctl distribution helm minio cosign notation osv-scanner skopeo podman ca-certificates)
for t in "${tools[@]}"; do
  case $t in
    conformance) scratch_tool conformance conformance.test github.com/opencontainers/distribution-spec/conformance "$CONFORMANCE_VERSION" \
      github.com/opencontainers/distribution-spec/conformance test ;;
    crane) go_tool crane github.com/google/go-containerregistry/cmd/crane "$CRANE_VERSION" ;;
    oras) go_tool oras oras.land/oras/cmd/oras "$ORAS_VERSION" ;;
    regctl) go_tool regctl github.com/regclient/regclient/cmd/regctl "$REGCTL_VERSION" ;;
    distribution) go_tool distribution-registry github.com/distribution/distribution/v3/cmd/registry "$DISTRIBUTION_VERSION" ;;
    helm) go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" ;;
    minio) go_tool minio github.com/minio/minio "$MINIO_VERSION" ;;
    cosign) go_tool cosign github.com/sigstore/cosign/v3/cmd/cosign "$COSIGN_VERSION" ;;
    notation) scratch_tool notation notation github.com/notaryproject/notation "$NOTATION_VERSION" \
      github.com/notaryproject/notation/cmd/notation build ;;
    osv-scanner) go_tool osv-scanner github.com/google/osv-scanner/v2/cmd/osv-scanner "$OSV_SCANNER_VERSION" ;;
    skopeo) apt_tool skopeo skopeo ;;
    podman) apt_tool podman podman ;;
    # scripts/image.sh copies the CA bundle into the image (e2e TestImage, TestHA).
    ca-certificates) apt_file /etc/ssl/certs/ca-certificates.crt ca-certificates ;;
    *) log "unknown tool $t"; exit 2 ;;
  esac
done
echo "$bin"
