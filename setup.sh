#!/bin/sh
# The README's quick start on a fresh Debian 12 machine, where even `make`
# may be missing: install the Debian packages TARGET needs with
# scripts/deps.sh (make included), then run `make TARGET`.
set -eu

usage() {
	cat <<'EOF'
usage: ./setup.sh TARGET

Install the Debian 12 packages TARGET needs (only those missing, `make`
included, with apt-get as root or through sudo; scripts/deps.sh says
which and why), then run `make TARGET`.

targets:
  run      build build/flock and run examples/primes.fl on all cores
  test     build with gcc and clang and run every test
  all      only build build/flock
  bench    benchmarks side by side with lua5.4, LuaJIT, Erlang and Go
  asan, tsan, stress, fuzz
           the sanitizer, stress and fuzz runs (see `make help`)

Once the packages are there, `make TARGET` does the same.
Exit status: make's; 64 for a bad command line; deps.sh's (69: could not
install, 77: needs root) when installing fails.
EOF
}

if [ $# -eq 0 ]; then
	echo "setup.sh: no target" >&2
	usage >&2
	exit 64
fi
case "$1" in
-h | --help | help)
	usage
	exit 0
	;;
run | all) deps="build" ;;
test | asan | tsan | stress | fuzz) deps="test" ;;
bench) deps="bench" ;;
*)
	echo "setup.sh: unknown target '$1'" >&2
	usage >&2
	exit 64
	;;
esac
if [ $# -gt 1 ]; then
	echo "setup.sh: one target only (got: $*)" >&2
	usage >&2
	exit 64
fi
target=$1

cd "$(dirname "$0")"
sh scripts/deps.sh "$deps"
exec make "$target"
