#!/usr/bin/env bash
# scripts/setup fails when the build fails, even with an older binary in the
# build directory. The failure is real: a compile flag that includes a header
# that does not exist (only the build sees it; cmake's compiler checks do not).
# Usage: setup.sh BUILD_DIR SOURCE_DIR
set -u
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$src"
mkdir -p "$tmp/build"
printf '#!/bin/sh\necho "dipaco 0.0 (old)"\n' >"$tmp/build/dipaco"
chmod +x "$tmp/build/dipaco"
DIPACO_BUILD=$tmp/build scripts/setup -DDIPACO_CUDA=OFF "-DCMAKE_CXX_FLAGS_RELEASE=-include $tmp/missing.h" >"$tmp/out" 2>&1
code=$?
if [[ $code -ne 0 ]] && grep -q "setup: build failed" "$tmp/out" && ! grep -q "setup: built" "$tmp/out"; then
  echo "ok   a failed build fails setup (exit $code) despite an older binary"
else
  echo "FAIL setup exited $code after a failed build"; sed 's/^/     | /' "$tmp/out" | tail -12; exit 1
fi
