#!/bin/sh
# SPDX-License-Identifier: MIT
# Debian 12 packages kvsink needs to build and run (the main job, demo.sh).
# Needs root. The test suite needs more: scripts/install-test-deps.sh.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
  build-essential autoconf automake libtool pkg-config \
  libuv1-dev libmsgpack-dev libsodium-dev libsystemd-dev libhiredis-dev check
