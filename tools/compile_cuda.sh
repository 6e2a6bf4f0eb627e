#!/usr/bin/env bash
# Compile every CUDA kernel source (kernels/cuda/*.cu) to PTX for sm_80 and sm_90 with nvcc, so that a kernel
# that does not compile fails CI. No GPU needed. Skips (exit 0, with a note) where nvcc is absent, unless
# CAMRT_REQUIRE_NVCC=1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nvcc=$(command -v nvcc || true)
[ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
if [ -z "$nvcc" ]; then
    if [ "${CAMRT_REQUIRE_NVCC:-0}" = 1 ]; then echo "compile_cuda: nvcc not found" >&2; exit 1; fi
    echo "compile_cuda: nvcc not found; CUDA kernels not compiled"
    exit 0
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
count=0
for src in "$root"/kernels/cuda/*.cu; do
    for arch in 80 90; do
        "$nvcc" -ptx -std=c++17 -arch="sm_$arch" -I"$root/kernels/cuda" -Werror all-warnings \
            -o "$out/$(basename "$src" .cu).sm_$arch.ptx" "$src"
        count=$((count + 1))
    done
done
echo "compile_cuda: $count PTX builds OK ($("$nvcc" --version | tail -1))"
