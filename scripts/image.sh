#!/usr/bin/env bash
# image.sh builds the registry binary and the container image from this
# repository with the machine's Docker engine, pulling no base image (the
# Dockerfile is FROM scratch; the CA bundle comes from the build machine's
# ca-certificates package).
#
# Usage:
#   scripts/image.sh [--multiarch] [--oci DIR] [TAG]
#
#   TAG           the image's name in the local Docker engine (default portcullis:dev)
#   --multiarch   also build linux/amd64 and linux/arm64 binaries and write one
#                 OCI image layout holding an index of both (default DIR:
#                 dist/oci). The Docker engine gets the image of its own
#                 platform as TAG; push the index to a registry with
#                   crane push --index DIR REGISTRY/REPO:TAG
#   --oci DIR     where --multiarch writes the layout (an existing one is replaced)
#
# Environment: VERSION (default: git describe), SOURCE_DATE_EPOCH (file times
# in the layout; default: the last commit's time), DOCKER (default docker).
# The last line printed is TAG.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=portcullis:dev
multiarch=false
oci=dist/oci
while [ $# -gt 0 ]; do
  case $1 in
    --multiarch) multiarch=true ;;
    --oci) shift; oci=${1:?--oci needs a directory} ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "image.sh: unknown flag $1" >&2; exit 2 ;;
    *) tag=$1 ;;
  esac
  shift
done

docker=${DOCKER:-docker}
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
certs=/etc/ssl/certs/ca-certificates.crt
if [ ! -s "$certs" ]; then
  echo "image.sh: $certs is missing: install Debian's ca-certificates package" >&2
  exit 1
fi

log() { echo "image.sh: $*" >&2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# context ARCH: a build context for linux/ARCH in $work/ARCH.
context() {
  local arch=$1 ctx="$work/$1"
  mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/etc/portcullis" "$ctx/rootfs/tmp" "$ctx/data"
  log "building the registry for linux/$arch ($version)"
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath \
    -ldflags "-s -w -X main.version=$version" -o "$ctx/registry" ./cmd/registry
  cp Dockerfile "$ctx/Dockerfile"
  cp "$certs" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nportcullis:x:65532:65532:portcullis:/data:/sbin/nologin\n' \
    > "$ctx/rootfs/etc/passwd"
  printf 'root:x:0:\nportcullis:x:65532:\n' > "$ctx/rootfs/etc/group"
  # What `docker run IMAGE` serves with no configuration mounted: every
  # default but the address and the data directory.
  printf 'version: 1\ndataDir: /data\nhttp:\n  addr: ":5000"\n' > "$ctx/rootfs/etc/portcullis/config.yml"
  chmod 0755 "$ctx/registry" "$ctx/rootfs" "$ctx/rootfs/etc" "$ctx/rootfs/etc/ssl" "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/etc/portcullis"
  chmod 0644 "$ctx/rootfs/etc/passwd" "$ctx/rootfs/etc/group" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt" "$ctx/rootfs/etc/portcullis/config.yml"
  chmod 1777 "$ctx/rootfs/tmp"
  chmod 0750 "$ctx/data"
}

host=$(go env GOARCH)
context "$host"
log "building $tag"
# The classic builder: it needs no buildx plugin, and FROM scratch pulls nothing.
DOCKER_BUILDKIT=0 "$docker" build --quiet --tag "$tag" \
  --build-arg "VERSION=$version" --build-arg "REVISION=$revision" "$work/$host" >&2

if $multiarch; then
  args=()
  for arch in amd64 arm64; do
    [ "$arch" = "$host" ] || context "$arch"
    args+=("linux/$arch=$work/$arch")
  done
  log "writing the OCI layout of linux/amd64 and linux/arm64 to $oci"
  go run ./scripts/ociimage --out "$oci" --version "$version" --revision "$revision" "${args[@]}"
fi
echo "$tag"
