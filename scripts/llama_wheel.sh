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
# Usage: scripts/llama_wheel.sh PYTHON [avx2|avx512]   (default avx2: every x86-64 machine of
# this kind has AVX2; avx512 adds AVX-512 without AMX, for machines known to have it)
set -euo pipefail

PY=${1:?usage: llama_wheel.sh PYTHON [avx2|avx512]}
LEVEL=${2:-${DEEPRLM_LLAMA_LEVEL:-avx2}}
VERSION=0.3.36

COMMON="-DGGML_NATIVE=OFF -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF \
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAMA_CURL=OFF"
case "$(uname -m)/$LEVEL" in
  x86_64/avx2) FLAGS="$COMMON -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF" ;;
  x86_64/avx512) FLAGS="$COMMON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON" ;;
  *) FLAGS="-DGGML_NATIVE=OFF -DLLAMA_CURL=OFF" ;;  # other architectures: the compiler's portable default
esac
FLAGS=$(echo "$FLAGS" | tr -s ' ')

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
