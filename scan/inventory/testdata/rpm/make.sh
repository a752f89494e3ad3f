#!/usr/bin/env bash
# make.sh regenerates the rpm database fixtures of scan/inventory and scan from the spec
# files below. It ran once; the tests use the committed files and need no rpm tools.
#
#   rpmdb.sqlite            written by rpm itself (Debian's rpm 4.18, sqlite backend)
#   rpmdb-512.sqlite        the same database vacuumed to 512-byte pages, so that headers
#                           spill onto overflow pages and the tables need interior pages
#   Packages                Berkeley DB hash database (rpm before 4.16, RHEL 7/8) made by
#                           libdb's db_load from the same headers, 1 KiB pages
#   Packages.db             ndb database (SUSE) written by the Python below, following
#                           rpm's lib/backend/ndb/rpmpkg.c: Debian's rpm has no ndb backend
#
# Needs: apt-get install rpm sqlite3 db5.3-util python3
set -euo pipefail

out=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{SPECS,RPMS,BUILD,db}

# spec NAME EPOCH VERSION RELEASE [SUBPACKAGE[=VERSION] ...]: a noarch package without
# files; a subpackage "-n full-name" gets its own name, "=VERSION" its own version.
spec() {
  local name=$1 epoch=$2 version=$3 release=$4
  shift 4
  {
    echo "Name: $name"
    [ "$epoch" = - ] || echo "Epoch: $epoch"
    echo "Version: $version"
    echo "Release: $release"
    echo "Summary: portcullis test fixture"
    echo "License: Apache-2.0"
    echo "BuildArch: noarch"
    echo "%description"
    echo "Test fixture."
    local main=yes
    for sub in "$@"; do
      local sname=${sub%%=*} sversion=
      [ "$sub" = "$sname" ] || sversion=${sub#*=}
      if [ "$sname" = "-" ]; then main=no; continue; fi
      echo "%package -n $sname"
      echo "Summary: portcullis test fixture"
      if [ -n "$sversion" ]; then echo "Version: $sversion"; echo "Epoch: 0"; fi
      echo "%description -n $sname"
      echo "Test fixture."
      echo "%files -n $sname"
    done
    [ "$main" = no ] || echo "%files"
  } > "$work/SPECS/$name.spec"
  rpmbuild -bb --quiet --define "_topdir $work" --define "_rpmdir $work/RPMS" \
    --define "_build_name_fmt %%{NAME}.rpm" "$work/SPECS/$name.spec"
}

spec bash - 5.1.8 6.el9
spec openssl 1 3.0.7 27.el9 openssl-libs
spec perl 4 5.32.1 481.el9 - perl-Carp=1.50
spec glibc - 2.34 60.el9 glibc-common glibc-minimal-langpack
spec ncurses - 6.2 8.20210508.el9 - ncurses-base ncurses-libs
spec rocky-release - 9.2 1.6.el9 rocky-repos
spec tzdata - 2023c 1.el9

rpm --initdb --dbpath "$work/db" --define '_db_backend sqlite'
rpm -i --justdb --nodeps --noscripts --dbpath "$work/db" --define '_db_backend sqlite' "$work"/RPMS/*.rpm
rpm -qa --dbpath "$work/db" --qf '%{NAME} %{EPOCHNUM}:%{VERSION}-%{RELEASE} %{SOURCERPM}\n' | sort
sqlite3 "$work/db/rpmdb.sqlite" 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null
cp "$work/db/rpmdb.sqlite" "$out/rpmdb.sqlite"
cp "$work/db/rpmdb.sqlite" "$work/small.sqlite"
sqlite3 "$work/small.sqlite" 'PRAGMA journal_mode=DELETE; PRAGMA page_size=512; VACUUM;' >/dev/null
cp "$work/small.sqlite" "$out/rpmdb-512.sqlite"

# Berkeley DB: key = the package number (native byte order, as rpm wrote it), value = the
# header blob; key 0 holds the next package number, as in rpm's own Packages files.
le32() { python3 -c "print(($1).to_bytes(4, 'little').hex())"; }
{
  printf 'VERSION=3\nformat=bytevalue\ntype=hash\ndb_pagesize=1024\nHEADER=END\n'
  printf ' %s\n %s\n' "$(le32 0)" "$(le32 "$(sqlite3 "$work/small.sqlite" 'SELECT max(hnum)+1 FROM Packages')")"
  sqlite3 "$work/small.sqlite" 'SELECT hnum, hex(blob) FROM Packages ORDER BY hnum' |
    while IFS='|' read -r hnum blob; do
      printf ' %s\n %s\n' "$(le32 "$hnum")" "${blob,,}"
    done
  printf 'DATA=END\n'
} > "$work/Packages.dump"
rm -f "$out/Packages"
db5.3_load -f "$work/Packages.dump" "$out/Packages"

sqlite3 "$work/small.sqlite" 'SELECT hnum, hex(blob) FROM Packages ORDER BY hnum' > "$work/blobs.txt"
python3 - "$work/blobs.txt" "$out/Packages.db" <<'PY'
import struct, sys, zlib

def magic(s):
    return struct.unpack("<I", s.encode())[0]

blobs = []
for line in open(sys.argv[1]):
    hnum, blob = line.strip().split("|")
    blobs.append((int(hnum), bytes.fromhex(blob)))

PAGE, SLOT, BLK = 4096, 16, 16
slotnpages = 1
slots = bytearray(PAGE * slotnpages)
# Header: magic, version, generation, slot pages, next package index (then padding).
struct.pack_into("<IIIII", slots, 0, magic("RpmP"), 0, 1, slotnpages, max(h for h, _ in blobs) + 1)
data = bytearray()
offset = PAGE * slotnpages
for i in range(2, PAGE * slotnpages // SLOT):
    struct.pack_into("<IIII", slots, i * SLOT, magic("Slot"), 0, 0, 0)
for i, (hnum, blob) in enumerate(blobs):
    blk = (offset + len(data)) // BLK
    rec = struct.pack("<IIII", magic("BlbS"), hnum, 1, len(blob)) + blob
    rec += struct.pack("<III", zlib.adler32(rec), len(blob), magic("BlbE"))
    rec += b"\0" * (-len(rec) % BLK)
    struct.pack_into("<IIII", slots, (i + 2) * SLOT, magic("Slot"), hnum, blk, len(rec) // BLK)
    data += rec
open(sys.argv[2], "wb").write(bytes(slots) + bytes(data))
PY
ls -l "$out"
