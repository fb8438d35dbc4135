#!/bin/sh
# Install the Debian 12 packages Flock needs to build, test and benchmark.
# Usage: scripts/deps.sh [build|test|bench]   (default: test)
# Installs only what is missing; needs root (or sudo) when something is.
set -eu
want="${1:-test}"
pkgs="make gcc pkg-config libuv1-dev libraft-dev libsodium-dev"
case "$want" in
build) ;;
test) pkgs="$pkgs clang libclang-rt-14-dev libcmocka-dev python3 python3-pytest" ;;
bench) pkgs="$pkgs clang libcmocka-dev lua5.4 luajit hyperfine erlang-base golang-go time" ;;
*) echo "deps.sh: unknown set '$want' (build, test or bench)" >&2; exit 64 ;;
esac
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps.sh: installing:$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
