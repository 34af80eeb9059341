#!/usr/bin/env bash
# Fetch the header-only build dependencies of paddle_te's CUDA backends into third_party/.
#
#   third_party/cudnn_frontend/include   cudnn-frontend 1.16.0 (header-only C++ graph API)
#   third_party/cudnn/include            cuDNN 9.19 headers (from the nvidia-cudnn-cu13 wheel)
#   third_party/cutlass/include          CUTLASS / CuTe 4.2 headers (flash kernels)
#
# Nothing here is needed at run time: on a GPU machine libcudnn comes from the installed
# nvidia-cudnn wheel (torch's), loaded dynamically by cudnn-frontend.
#
# Idempotent: each dependency is skipped when its marker header exists. The 366 MB cuDNN wheel
# is cached under ${PTE_CACHE:-~/.cache/paddle_te} so repeated CI runs do not download it again.
# The small wheels are also copied into .whl/ so they can be carried to a GPU machine that has no
# network (pip install --no-index --no-deps --target /tmp/site .whl/*.whl).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TP="$ROOT/third_party"
CACHE="${PTE_CACHE:-$HOME/.cache/paddle_te}"
WHL="$ROOT/.whl"
PY="${PYTHON:-python3}"

CUDNN_FE_VERSION=1.16.0
CUDNN_VERSION=9.19.0.56
CUTLASS_VERSION=4.2.0.0

mkdir -p "$TP" "$CACHE" "$WHL"

# pip download one wheel (no deps) into the cache, unless a matching one is there already.
# Prints the wheel's path.
fetch_wheel() {
  local dist="$1" version="$2" pattern="$3"
  local found
  found=$(ls "$CACHE"/$pattern 2>/dev/null | head -n1 || true)
  if [[ -z "$found" ]]; then
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: \
      --python-version 3.12 --implementation cp \
      --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform any \
      -d "$CACHE" "${dist}==${version}" >&2
    found=$(ls "$CACHE"/$pattern | head -n1)
  fi
  echo "$found"
}

# unzip the members under `prefix` of a wheel into `dest` (flattening `prefix`).
extract() {
  local wheel="$1" prefix="$2" dest="$3"
  local tmp
  tmp=$(mktemp -d)
  unzip -q -o "$wheel" "${prefix}/*" -d "$tmp"
  rm -rf "$dest"
  mkdir -p "$(dirname "$dest")"
  mv "$tmp/$prefix" "$dest"
  rm -rf "$tmp"
}

# cudnn-frontend: the wheel carries the headers under include/. Small wheels are always fetched
# (from the cache when there) because they are also copied to .whl/.
w=$(fetch_wheel nvidia-cudnn-frontend "$CUDNN_FE_VERSION" "nvidia_cudnn_frontend-${CUDNN_FE_VERSION}-*.whl")
if [[ ! -f "$TP/cudnn_frontend/include/cudnn_frontend.h" ]]; then
  extract "$w" include "$TP/cudnn_frontend/include"
fi
cp -f "$w" "$WHL/"

# cuDNN headers only (the wheel is 366 MB; only nvidia/cudnn/include is unpacked).
if [[ ! -f "$TP/cudnn/include/cudnn.h" ]]; then
  w=$(fetch_wheel nvidia-cudnn-cu13 "$CUDNN_VERSION" "nvidia_cudnn_cu13-${CUDNN_VERSION}-*.whl")
  extract "$w" nvidia/cudnn/include "$TP/cudnn/include"
fi

# CUTLASS / CuTe headers.
w=$(fetch_wheel nvidia-cutlass "$CUTLASS_VERSION" "nvidia_cutlass-${CUTLASS_VERSION}-*.whl")
if [[ ! -f "$TP/cutlass/include/cutlass/cutlass.h" ]]; then
  extract "$w" cutlass_library/source/include "$TP/cutlass/include"
fi
cp -f "$w" "$WHL/"

echo "CUDNN_FRONTEND_INCLUDE_DIR=$TP/cudnn_frontend/include"
echo "CUDNN_INCLUDE_DIR=$TP/cudnn/include"
echo "CUTLASS_INCLUDE_DIR=$TP/cutlass/include"
echo "wheels for the GPU machine: $WHL"
