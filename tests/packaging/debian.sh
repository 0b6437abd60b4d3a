#!/bin/sh
# SPDX-License-Identifier: MIT
# Builds the Debian binary packages from a copy of the tree and checks
# what they hold: every program, the library and its -dev files, the
# units, the sysusers file, the configuration as a conffile, the socket
# enabled by the maintainer scripts; lintian must report no errors.
# Run by check.sh (not by make check: it builds the whole tree again).
set -eu
command -v dpkg-buildpackage >/dev/null 2>&1 || { echo "SKIP: no dpkg-buildpackage"; exit 77; }
src=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvsink-deb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/kvsink"
# a clean copy: what git tracks, as a release would carry it
(cd "$src" && git ls-files -z | xargs -0 tar cf - ) | tar xf - -C "$tmp/kvsink"
cd "$tmp/kvsink"
DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" dpkg-buildpackage -us -uc -b > "$tmp/build.log" 2>&1 ||
  { tail -n 60 "$tmp/build.log"; echo "FAIL: dpkg-buildpackage"; exit 1; }
cd "$tmp"
fail=0
has() { # package path-regex
  deb=$(ls "$tmp"/"$1"_*.deb) || { echo "FAIL: no package $1"; fail=1; return; }
  dpkg-deb -c "$deb" | awk '{print $6}' | grep -Eq "$2" || { echo "FAIL: $1 lacks $2"; fail=1; }
}
has kvsinkd '^\./usr/sbin/kvsinkd$'
has kvsinkd 'systemd/system/kvsinkd\.service$'
has kvsinkd 'systemd/system/kvsinkd\.socket$'
has kvsinkd '^\./usr/lib/sysusers\.d/kvsink\.conf$'
has kvsinkd '^\./etc/kvsink/kvsinkd\.conf$'
has kvsinkd 'man8/kvsinkd\.8'
has libkvsink0 'libkvsink\.so\.0'
has libkvsink-dev '^\./usr/include/kvsink\.h$'
has libkvsink-dev 'pkgconfig/kvsink\.pc$'
has kvsink-tools '^\./usr/bin/kvsinkctl$'
has kvsink-tools '^\./usr/bin/kvsink-bench$'
has python3-kvsink '^\./usr/lib/python3/dist-packages/kvsink/client\.py$'
dpkg-deb -e "$(ls kvsinkd_*.deb)" "$tmp/ctl"
grep -qx '/etc/kvsink/kvsinkd.conf' "$tmp/ctl/conffiles" || { echo "FAIL: kvsinkd.conf is not a conffile"; fail=1; }
grep -q 'kvsinkd.socket' "$tmp/ctl/postinst" || { echo "FAIL: postinst does not enable kvsinkd.socket"; fail=1; }
grep -q 'sysusers' "$tmp/ctl/postinst" || { echo "FAIL: postinst does not create the kvsink user"; fail=1; }
if command -v lintian >/dev/null 2>&1; then
  lintian --no-tag-display-limit ./*.changes > "$tmp/lintian.txt" 2>&1 || true
  if grep '^E:' "$tmp/lintian.txt"; then echo "FAIL: lintian errors"; fail=1; fi
  echo "lintian: $(grep -c '^W:' "$tmp/lintian.txt" || true) warnings, 0 errors"
else
  echo "note: lintian not installed, not run"
fi
[ "$fail" = 0 ] || exit 1
ls -1 ./*.deb
echo "ok: Debian packages built and checked"
