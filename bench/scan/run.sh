#!/usr/bin/env bash
# Compare `portcullis scan` with osv-scanner v2.5.0 on the same image tarballs and the same
# offline OSV bundle (/work/shared/vulndb). Prints a Markdown table on stdout, progress on stderr.
# Everything is built in a temp dir that is removed on exit (also on error or Ctrl-C).
#
#   bench/scan/run.sh            # from anywhere; needs root for debootstrap
#   RUNS=5 bench/scan/run.sh     # runs of each scanner per image (median is reported)
#   NPM_PACKAGES=1000            # size of the npm image
#   BASE_TAR=/path/rootfs.tar    # reuse a debootstrap rootfs tar instead of running debootstrap
#   KEEP=1                       # keep the temp dir (images, database, binary) and say where
set -euo pipefail

RUNS=${RUNS:-3}
NPM_PACKAGES=${NPM_PACKAGES:-1000}
TOOLS=${TOOLS:-$HOME/.cache/portcullis-tools/bin}
OSV=${OSV_SCANNER:-$TOOLS/osv-scanner}
CRANE=${CRANE:-$TOOLS/crane}
SHARED_DB=${SHARED_DB:-/work/shared/vulndb/osv}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

log() { echo "[bench/scan] $*" >&2; }

WORK=$(mktemp -d /tmp/bench-scan.XXXXXX)
cleanup() { if [ -n "${KEEP:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

need() { command -v "$1" >/dev/null 2>&1 || apt-get install -y "$2" >/dev/null; }
need debootstrap debootstrap
[ -x /usr/bin/time ] || apt-get install -y time >/dev/null
need jq jq
for b in "$OSV" "$CRANE"; do [ -x "$b" ] || { log "missing $b"; exit 1; }; done
"$OSV" --version 2>&1 | grep -q 2.5.0 || log "warning: osv-scanner is not v2.5.0"

log "building ./cmd/registry"
(cd "$REPO" && go build -o "$WORK/portcullis" ./cmd/registry)
OURS=$WORK/portcullis

# One bundle both tools read: osv-scanner wants DBDIR/osv-scalibr/<Eco>/all.zip, ours reads that too.
# The shared bundle has no PyPI archive; the two PyPI records of scan/testdata/osv-extra make one,
# so that both tools can look up the Python packages of image (d) offline.
DB=$WORK/db
for z in "$SHARED_DB"/*/all.zip; do
  eco=$(basename "$(dirname "$z")")
  mkdir -p "$DB/osv-scalibr/$eco"
  cp "$z" "$DB/osv-scalibr/$eco/all.zip"
done
mkdir -p "$DB/osv-scalibr/PyPI"
(cd "$REPO/scan/testdata/osv-extra/PyPI" && python3 -m zipfile -c "$DB/osv-scalibr/PyPI/all.zip" ./*.json)

IMAGES=()
# (a) Debian 12 minbase.
ROOTFS=$WORK/rootfs
if [ -n "${BASE_TAR:-}" ]; then
  log "using $BASE_TAR as the Debian 12 layer"
  cp "$BASE_TAR" "$WORK/layer.tar"
  "$CRANE" append -f "$WORK/layer.tar" --new_tag example.invalid/debian:12 -o "$WORK/debian.tar" >/dev/null
  IMAGES+=(debian)
  BASE_LAYER=(-f "$WORK/layer.tar")
elif log "debootstrap bookworm minbase from $MIRROR" && debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
  tar -C "$ROOTFS" -cf "$WORK/layer.tar" .
  rm -rf "$ROOTFS"
  "$CRANE" append -f "$WORK/layer.tar" --new_tag example.invalid/debian:12 -o "$WORK/debian.tar" >/dev/null
  IMAGES+=(debian)
  BASE_LAYER=(-f "$WORK/layer.tar")
else
  log "debootstrap failed (mirror unreachable?); skipping (a). Last lines:"
  tail -5 "$WORK/debootstrap.log" >&2
  rm -rf "$ROOTFS"
  BASE_LAYER=()
fi

# (c) A small Debian image: only what a scanner reads of (a), os-release and the dpkg status
# file (the shape of a distroless base), where the fixed cost of a scan dominates.
if [ ${#BASE_LAYER[@]} -gt 0 ]; then
  mkdir -p "$WORK/small"
  tar -C "$WORK/small" -xf "$WORK/layer.tar" ./usr/lib/os-release ./etc/os-release ./var/lib/dpkg/status
  tar -C "$WORK/small" -cf "$WORK/small-layer.tar" .
  rm -rf "$WORK/small"
  "$CRANE" append -f "$WORK/small-layer.tar" --new_tag example.invalid/debian-small:12 -o "$WORK/debian-small.tar" >/dev/null
  IMAGES+=(debian-small)
  SMALL_LAYER=(-f "$WORK/small-layer.tar")
else
  SMALL_LAYER=()
fi

# (d) The small Debian layer plus a layer with a Go binary (scan/testdata/goapp, built with its
# module dependency), 200 npm packages and Python distributions (dist-info and egg-info).
log "building the Go binary of image (d)"
mkdir -p "$WORK/poly/usr/local/bin"
(cd "$REPO/scan/testdata/goapp" && CGO_ENABLED=0 go build -trimpath -o "$WORK/poly/usr/local/bin/goapp" .)
python3 "$HERE/gen_npm.py" "$WORK/poly" 200
python3 "$HERE/gen_python.py" "$WORK/poly"
tar -C "$WORK/poly" -cf "$WORK/poly-layer.tar" .
rm -rf "$WORK/poly"
"$CRANE" append "${SMALL_LAYER[@]}" -f "$WORK/poly-layer.tar" --new_tag example.invalid/go-npm-python:1 \
  -o "$WORK/go-npm-python.tar" >/dev/null
IMAGES+=(go-npm-python)

# (b) The Debian layer (if any) plus a layer with /app holding $NPM_PACKAGES npm packages.
log "generating $NPM_PACKAGES npm packages"
python3 "$HERE/gen_npm.py" "$WORK/npm" "$NPM_PACKAGES"
tar -C "$WORK/npm" -cf "$WORK/npm-layer.tar" .
rm -rf "$WORK/npm"
"$CRANE" append "${BASE_LAYER[@]}" -f "$WORK/npm-layer.tar" --new_tag example.invalid/debian-npm:12 \
  -o "$WORK/debian-npm.tar" >/dev/null
IMAGES+=(debian-npm)

# run TOOL IMAGE I: one timed run; appends "SECONDS KB USER SYS" to $WORK/TOOL-IMAGE.times.
# Times are bash's `time` in milliseconds (/usr/bin/time's count in hundredths, too coarse
# for a small image), which includes /usr/bin/time itself (under a millisecond), there for
# the peak RSS.
run() {
  local tool=$1 img=$2 i=$3 out=$WORK/$1-$2-$3.json rc=0 TIMEFORMAT='%3R %3U %3S' wall user sys
  if [ "$tool" = ours ]; then
    { time /usr/bin/time -f "%M" -o "$WORK/t" "$OURS" scan --archive "$WORK/$img.tar" \
      --vulndb "$DB" --format json >"$out" 2>"$WORK/$tool.err" || rc=$?; } 2>"$WORK/bt"
    [ "$rc" = 0 ] || { log "ours failed on $img ($rc)"; cat "$WORK/$tool.err" >&2; exit 1; }
  else
    mkdir -p "$WORK/home"
    # Same flags as scan/differential_test.go: the artifact preset plus the two JS extractors.
    { time HOME=$WORK/home /usr/bin/time -f "%M" -o "$WORK/t" "$OSV" scan image --archive --offline \
      --local-db-path "$DB" --format json \
      --experimental-plugins artifact \
      --experimental-plugins javascript/packagejson \
      --experimental-plugins javascript/packagelockjson \
      "$WORK/$img.tar" >"$out" 2>"$WORK/$tool.err" || rc=$?; } 2>"$WORK/bt"
    [ "$rc" = 0 ] || [ "$rc" = 1 ] || { log "osv-scanner failed on $img ($rc)"; cat "$WORK/$tool.err" >&2; exit 1; }
    rm -rf "$WORK/home"
  fi
  read -r wall user sys <"$WORK/bt"
  echo "$wall $(tail -1 "$WORK/t") $user $sys" >>"$WORK/$tool-$img.times"
  log "$img $tool run $i: $(tail -1 "$WORK/$tool-$img.times")"
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

# Findings as unique (package, version, id) triples, the differential test's unit.
count_ours() { jq -r '.findings[] | [.package, .version, .id] | @tsv' "$1" | sort -u | wc -l; }
count_osv() {
  jq -r '.results[]?.packages[]? | (.package.os_package_name // .package.name) as $n
    | .package.version as $v | .vulnerabilities[]? | [$n, $v, .id] | @tsv' "$1" | sort -u | wc -l
}

for img in "${IMAGES[@]}"; do
  for i in $(seq 1 "$RUNS"); do
    if [ $((i % 2)) = 1 ]; then run ours "$img" "$i"; run osv "$img" "$i"
    else run osv "$img" "$i"; run ours "$img" "$i"; fi
  done
done

echo "| image | size MiB | ours median s | osv-scanner median s | ours/osv | ours CPU s | osv-scanner CPU s | CPU ours/osv | ours peak RSS MiB | osv-scanner peak RSS MiB | findings ours | findings osv-scanner |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for img in "${IMAGES[@]}"; do
  to=$(cut -d' ' -f1 "$WORK/ours-$img.times" | median)
  tv=$(cut -d' ' -f1 "$WORK/osv-$img.times" | median)
  ro=$(cut -d' ' -f2 "$WORK/ours-$img.times" | sort -n | tail -1)
  rv=$(cut -d' ' -f2 "$WORK/osv-$img.times" | sort -n | tail -1)
  co=$(awk '{print $3+$4}' "$WORK/ours-$img.times" | median)
  cv=$(awk '{print $3+$4}' "$WORK/osv-$img.times" | median)
  size=$(du -m "$WORK/$img.tar" | cut -f1)
  fo=$(count_ours "$WORK/ours-$img-1.json")
  fv=$(count_osv "$WORK/osv-$img-1.json")
  awk -v img="$img" -v size="$size" -v to="$to" -v tv="$tv" -v co="$co" -v cv="$cv" -v ro="$ro" -v rv="$rv" -v fo="$fo" -v fv="$fv" \
    'BEGIN {printf "| %s | %s | %.3f | %.3f | %.2f | %.3f | %.3f | %.2f | %.0f | %.0f | %d | %d |\n", img, size, to, tv, to/tv, co, cv, co/cv, ro/1024, rv/1024, fo, fv}'
done
echo
echo "Runs per scanner per image: $RUNS, alternating. Peak RSS is the largest of the runs. Findings are unique (package, version, id) triples."
echo "Packages our scanner found: $(for img in "${IMAGES[@]}"; do printf '%s=%s ' "$img" "$(jq .packages "$WORK/ours-$img-1.json")"; done)"

# The server keeps the database loaded: time the scan of each image pushed to
# a registry whose database is already loaded (a fresh data dir per run, so no
# layer is cached), read from portcullis_scan_duration_seconds.
server_scan() {
  local img=$1 i=$2 data="$WORK/srv-$img-$i" port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$OURS" serve --addr "127.0.0.1:$port" --data "$data" 2>"$WORK/srv.log" &
  local pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  "$OURS" vulndb import "$SHARED_DB/.." --data "$data" >/dev/null
  until grep -q "vulnerability database loaded" "$WORK/srv.log"; do sleep 0.2; done
  "$CRANE" push --insecure "$WORK/$img.tar" "127.0.0.1:$port/bench/$img:v1" >/dev/null 2>&1
  for _ in $(seq 600); do
    n=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^portcullis_scan_duration_seconds_count/ {print $2}')
    [ "${n:-0}" != 0 ] && break
    sleep 0.1
  done
  curl -s "http://127.0.0.1:$port/metrics" | awk '/^portcullis_scan_duration_seconds_sum/ {print $2}' >> "$WORK/server-$img.times"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
for img in "${IMAGES[@]}"; do
  for i in $(seq 1 "$RUNS"); do server_scan "$img" "$i"; done
done
echo
echo "| image | ours in the server, database loaded: median s | ours/osv-scanner |"
echo "|---|---:|---:|"
for img in "${IMAGES[@]}"; do
  ts=$(median < "$WORK/server-$img.times")
  tv=$(cut -d' ' -f1 "$WORK/osv-$img.times" | median)
  awk -v img="$img" -v ts="$ts" -v tv="$tv" 'BEGIN {printf "| %s | %.3f | %.2f |\n", img, ts, ts/tv}'
done
