#!/bin/sh
# Benchmarks side by side with lua5.4, LuaJIT, Erlang and Go; see bench/run.py.
exec /usr/bin/python3 "$(dirname "$0")/run.py" "$@"
