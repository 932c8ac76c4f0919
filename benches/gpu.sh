#!/usr/bin/env bash
# The GPU check of the CubeCL kernels, in two halves, because the GPU machine
# has no Rust toolchain, no crate sources and no network:
#
#   benches/gpu.sh build   # here: builds the CUDA kernel tests and benchmark
#                          # (release, --features cuda) into gpu-bin/ (ignored
#                          # by git; small enough to carry, stripped)
#   benches/gpu.sh run     # there (device `run` with carry: ["gpu-bin"]): the
#                          # kernel tests on CUDA, then benches/cube.rs: fused vs
#                          # unfused per op, SGMV vs a loop over adapters, and
#                          # achieved GB/s / TFLOP/s as a fraction of the peak
#                          # measured in the same run. Well under 8 minutes.
#
# cubecl-cuda compiles kernels at run time with NVRTC, loaded by cudarc: `run`
# points LD_LIBRARY_PATH at the CUDA libraries of the machine's Python packages
# (nvidia-cuda-nvrtc, nvidia-cuda-runtime) when the system has none.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=gpu-bin

build() {
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/peftc/target}"
    local json
    json=$(mktemp)
    cargo test --release -p peftc-runtime --features cuda --test cube_kernels --no-run --message-format=json >"$json"
    # `cargo build --release`, not `cargo bench`: the release profile the test
    # above was built with, so the dependencies are built once.
    cargo build --release --features cuda --bench cube --message-format=json >>"$json"
    mkdir -p "$out"
    python3 - "$json" "$out" <<'PY'
import json, shutil, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("cube_kernels", "cube"):
        shutil.copy(m["executable"], f"{sys.argv[2]}/{m['target']['name']}")
PY
    rm -f "$json"
    strip "$out"/cube_kernels "$out"/cube
    grep -qx "/$out/" .git/info/exclude 2>/dev/null || echo "/$out/" >>.git/info/exclude
    ls -la "$out"
    du -ch "$out"/* | tail -1
}

run() {
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.memory --format=csv,noheader || true
    if ! ldconfig -p 2>/dev/null | grep -q libnvrtc; then
        libs=$(python3 - <<'PY' 2>/dev/null || true
import glob, os, site
dirs = set()
for base in site.getsitepackages():
    for pat in ("nvidia/*/lib", "nvidia/cu*/lib", "nvidia/*/lib64"):
        dirs.update(glob.glob(os.path.join(base, pat)))
print(":".join(sorted(dirs)))
PY
)
        export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
    local start
    start=$(date +%s)
    echo "== kernel tests on CUDA"
    "$out"/cube_kernels --test-threads 1
    echo "== kernel benchmarks on CUDA"
    PEFTC_BENCH_DEVICE=cuda "$out"/cube --bench
    echo "== done in $(( $(date +%s) - start )) s"
}

case "${1:-}" in
    build) build ;;
    run) run ;;
    *) echo "usage: benches/gpu.sh build|run" >&2; exit 2 ;;
esac
