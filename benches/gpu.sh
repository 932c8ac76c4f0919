#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and no internet (the crates
# vendored or already in ~/.cargo): builds the CUDA path, runs the CubeCL
# kernel tests on CUDA, then benches/cube.rs (fused vs unfused per op, SGMV vs
# a loop over adapters, achieved bandwidth / throughput as a fraction of the
# device's measured peak). Meant to finish within 8 minutes on an H100/H200.
#
#   benches/gpu.sh            # CUDA
#   PEFTC_GPU_BACKEND=wgpu benches/gpu.sh   # Vulkan through wgpu instead
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/peftc/gpu-target}"
backend="${PEFTC_GPU_BACKEND:-cuda}"
offline=()
[ "${PEFTC_ONLINE:-0}" = 1 ] || offline=(--offline)
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader || true

features=()
[ "$backend" = cuda ] && features=(--features cuda)
start=$(date +%s)
echo "== kernel tests on $backend"
cargo test --release "${offline[@]}" "${features[@]}" -p peftc-runtime --test cube_kernels 2>&1 | tail -15
echo "== kernel benchmarks on $backend"
PEFTC_BENCH_DEVICE="$backend" cargo bench "${offline[@]}" "${features[@]}" --bench cube 2>&1 | grep -v '^\s*\(Compiling\|Finished\|Running\)'
echo "== done in $(( $(date +%s) - start )) s"
