#!/usr/bin/env bash
# Build KenLM's command-line tools (lmplz, build_binary, query) from the `kenlm` source package.
#
#   scripts/build_kenlm.sh PREFIX            # installs PREFIX/bin/{lmplz,build_binary,query}
#   export HARKEN_KENLM_BIN=PREFIX/bin       # or put PREFIX/bin on PATH
#
# Needs a C++ compiler, cmake and Debian's Boost/compression dev packages:
#   apt-get install build-essential cmake libboost-program-options-dev libboost-system-dev \
#       libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev
# The source comes from PyPI (the same `kenlm` sdist harken depends on), fetched with pip.
# Set KENLM_SDIST=/path/to/kenlm-X.tar.gz to build from a tarball already at hand.
# Takes about 3 minutes on 2 cores; an existing PREFIX/bin/lmplz is kept (delete it to rebuild).
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 PREFIX   (installs PREFIX/bin/lmplz and PREFIX/bin/build_binary)" >&2
  exit 2
fi
prefix=$(mkdir -p "$1" && cd "$1" && pwd)
if [ -x "$prefix/bin/lmplz" ] && [ -x "$prefix/bin/build_binary" ]; then
  echo "KenLM tools already in $prefix/bin"
  exit 0
fi
for tool in cmake c++ make; do
  command -v "$tool" >/dev/null || { echo "$0: '$tool' is missing (see the apt-get line at the top of this script)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -n "${KENLM_SDIST:-}" ]; then
  cp "$KENLM_SDIST" "$work/"
else
  # pip prepares the sdist's metadata in an isolated build environment (setuptools and wheel
  # fetched there), so this works with a bare system Python.
  python3 -m pip download --quiet --no-deps --no-binary=kenlm --dest "$work" kenlm
fi
tar -xzf "$work"/kenlm-*.tar.gz -C "$work"
src=$(find "$work" -maxdepth 1 -type d -name 'kenlm-*' | head -n 1)
[ -f "$src/CMakeLists.txt" ] || { echo "$0: no CMakeLists.txt in the kenlm source package" >&2; exit 1; }

jobs=$(nproc 2>/dev/null || echo 2)
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 \
  -DBUILD_TESTING=OFF -DCMAKE_INSTALL_PREFIX="$prefix" >"$work/cmake.log" 2>&1 \
  || { tail -n 30 "$work/cmake.log" >&2; exit 1; }
cmake --build "$work/build" --target lmplz build_binary query -j "$jobs" >"$work/build.log" 2>&1 \
  || { tail -n 30 "$work/build.log" >&2; exit 1; }
mkdir -p "$prefix/bin"
for tool in lmplz build_binary query; do
  install -m 755 "$work/build/bin/$tool" "$prefix/bin/$tool"
done
echo "KenLM tools installed in $prefix/bin: export HARKEN_KENLM_BIN=$prefix/bin"
