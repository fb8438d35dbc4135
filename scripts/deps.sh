#!/bin/sh
# Install the Debian 12 packages Flock needs to build, test or benchmark.
# Usage: scripts/deps.sh [build|test|bench]   (default: test)
# Installs only what is missing, saying what and why, with apt-get's own
# progress; needs root (or sudo) only when something is missing. Works on
# a minimal Debian 12 (debootstrap minbase): nothing is assumed installed.
set -eu

usage() {
	cat <<'EOF'
usage: scripts/deps.sh [build|test|bench]

Install the Debian 12 packages a set needs, only those that are missing,
with apt-get (as root, or through sudo).

  build   make, gcc and the C library headers, pkg-config, the libraries
          Flock links: what `make` and `make run` need
  test    build + clang, the sanitizer runtimes and llvm-symbolizer,
          cmocka, python3 and pytest: what `make test` needs (the default)
  bench   build + clang, cmocka, python3 and the systems compared against:
          what `make bench` needs
EOF
}

# Why each package is wanted: printed next to the ones that get installed.
why() {
	case "$1" in
	make) echo "runs the Makefile" ;;
	gcc) echo "C compiler for build/flock" ;;
	libc6-dev) echo "C library headers (stdint.h, ...); gcc alone lacks them" ;;
	pkg-config) echo "finds the libraries' compiler flags" ;;
	libuv1-dev) echo "event loop library (cluster networking)" ;;
	libraft-dev) echo "Raft library (cluster control plane)" ;;
	libsodium-dev) echo "crypto library (cluster authentication)" ;;
	clang) echo "second compiler; ThreadSanitizer and fuzz builds" ;;
	libclang-rt-14-dev) echo "clang's sanitizer and libFuzzer runtimes" ;;
	llvm) echo "llvm-symbolizer: sanitizer reports name functions (the TSan suppressions match by name)" ;;
	libcmocka-dev) echo "unit test framework" ;;
	python3) echo "runs the test and benchmark drivers" ;;
	python3-pytest) echo "golden-program, CLI and docs tests" ;;
	lua5.4 | luajit) echo "benchmark comparison (interpreter)" ;;
	erlang-base | golang-go) echo "benchmark comparison (threads)" ;;
	hyperfine) echo "benchmark timing" ;;
	iptables) echo "fault tests cut machines' connections on loopback addresses (as root)" ;;
	time) echo "GNU time, peak memory of benchmark runs" ;;
	*) echo "" ;;
	esac
}

case "${1:-test}" in
-h | --help | help)
	usage
	exit 0
	;;
esac
[ $# -le 1 ] || { echo "deps.sh: too many arguments" >&2; usage >&2; exit 64; }
want="${1:-test}"
pkgs="make gcc libc6-dev pkg-config libuv1-dev libraft-dev libsodium-dev"
case "$want" in
build) for_what="build Flock" ;;
test)
	for_what="build and test Flock"
	pkgs="$pkgs clang libclang-rt-14-dev llvm libcmocka-dev python3 python3-pytest iptables"
	;;
bench)
	for_what="build and benchmark Flock"
	pkgs="$pkgs clang libcmocka-dev python3 lua5.4 luajit hyperfine erlang-base golang-go time"
	;;
*)
	echo "deps.sh: unknown set '$want' (build, test or bench)" >&2
	usage >&2
	exit 64
	;;
esac

missing_of() {
	m=""
	for p in $pkgs; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
			grep -q 'install ok installed' || m="$m $p"
	done
	echo "$m"
}

missing=$(missing_of)
[ -z "$missing" ] && exit 0

# shellcheck disable=SC2086
n=$(echo $missing | wc -w)
echo "deps.sh: to $for_what, $n Debian package(s) are missing:" >&2
for p in $missing; do
	printf '  %-20s %s\n' "$p" "$(why "$p")" >&2
done

if ! command -v apt-get >/dev/null 2>&1; then
	echo "deps.sh: no apt-get here (this script knows Debian 12); install the packages above yourself" >&2
	exit 69
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "deps.sh: installing needs root, and sudo is not installed: run this again as root" >&2
		exit 77
	fi
	SUDO="sudo"
	echo "deps.sh: not root, using sudo" >&2
fi

# sudo resets the environment, so DEBIAN_FRONTEND goes through env.
apt() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }

echo "deps.sh: apt-get update (refreshing the package lists)" >&2
apt update || { echo "deps.sh: apt-get update failed (see above)" >&2; exit 69; }
echo "deps.sh: apt-get install --no-install-recommends$missing (this can take a few minutes)" >&2
# shellcheck disable=SC2086
apt install -y --no-install-recommends $missing ||
	{ echo "deps.sh: apt-get install failed (see above)" >&2; exit 69; }

still=$(missing_of)
if [ -n "$still" ]; then
	echo "deps.sh: still not installed after apt-get:$still" >&2
	exit 69
fi
echo "deps.sh: installed$missing" >&2
