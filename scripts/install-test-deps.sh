#!/bin/sh
# SPDX-License-Identifier: MIT
# Debian 12 packages the test command (check.sh) needs beyond the build's:
# systemd-analyze, man page linting, the Python package's tests (numpy,
# torch, pytest), libFuzzer (clang), the Redis tier's tests, promtool for
# the metrics, and the Debian packaging test. Needs root.
set -eu
export DEBIAN_FRONTEND=noninteractive
sh "$(dirname "$0")/install-deps.sh"
apt-get install -y -q --no-install-recommends \
  systemd mandoc groff-base xz-utils ca-certificates git \
  python3 python3-numpy python3-torch python3-pytest python3-setuptools \
  clang-14 libclang-rt-14-dev util-linux \
  libhiredis-dev redis-server \
  prometheus \
  debhelper dpkg-dev fakeroot lintian
