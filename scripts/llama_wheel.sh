#!/usr/bin/env bash
# Builds (once per version and flag set) and prints the path of a portable llama-cpp-python wheel.
#
# Why: PyPI has no Linux wheel, so pip compiles llama.cpp, and llama.cpp's default build is
# `-march=native`: a wheel built on a CPU with AMX or AVX-512 crashes on one without, and the
# AMX kernels crash even on some CPUs that advertise AMX. pip's wheel cache is keyed by the
# source, not by CMAKE_ARGS, so a native wheel built earlier would be reused silently. This
# script therefore never reads pip's cache: it builds with fixed flags into a folder named by
# a hash of version + flags, and installs only from there.
#
# The version and the flags come from src/deeprlm/local/build.py (run as a plain script: this
# runs before deeprlm is installed), which also checks a build against the CPU at run time.
#
# Usage: scripts/llama_wheel.sh PYTHON [avx2|avx512]   (default avx2: every x86-64 machine of
# this kind has AVX2; avx512 adds AVX-512 without AMX, for machines known to have it)
set -euo pipefail

PY=${1:?usage: llama_wheel.sh PYTHON [avx2|avx512]}
LEVEL=${2:-${DEEPRLM_LLAMA_LEVEL:-avx2}}
BUILD="$(cd "$(dirname "$0")/.." && pwd)/src/deeprlm/local/build.py"
VERSION=$("$PY" -I "$BUILD" version)
FLAGS=$("$PY" -I "$BUILD" cmake-args "$LEVEL")

KEY=$(printf '%s %s %s' "$VERSION" "$FLAGS" "$("$PY" -c 'import sys; print(sys.implementation.cache_tag)')" | sha256sum | cut -c1-16)
DIR="${DEEPRLM_HOME:-$HOME/.cache/deeprlm}/wheels/llama-cpp-python-$VERSION-$LEVEL-$KEY"

if ! ls "$DIR"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $VERSION ($LEVEL, no -march=native, no AMX): about 7 minutes on 2 cores" >&2
  rm -rf "$DIR.tmp" && mkdir -p "$DIR.tmp"
  CMAKE_ARGS="$FLAGS" FORCE_CMAKE=1 "$PY" -m pip wheel --quiet --no-deps --no-cache-dir \
    --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -w "$DIR.tmp" >&2
  printf '%s\n' "$FLAGS" >"$DIR.tmp/CMAKE_ARGS"
  rm -rf "$DIR" && mv "$DIR.tmp" "$DIR"
fi
ls "$DIR"/llama_cpp_python-*.whl
