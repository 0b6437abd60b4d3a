#!/bin/sh
# Debian 12 packages kvsink needs to build, run and test. Needs root.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
  build-essential autoconf automake libtool pkg-config \
  libuv1-dev libmsgpack-dev libsystemd-dev check \
  systemd mandoc groff-base xz-utils ca-certificates \
  python3 python3-numpy python3-torch python3-pytest python3-setuptools
