"""The CPU's matrix-multiply limit: a 2-thread f32 GEMM rate (numpy's bundled OpenBLAS),
in GFLOP/s, the median of several runs at MiniLM- and SmolLM2-like shapes."""

import json
import time

import numpy as np


def rate(m, k, n, reps=10):
    a = np.random.rand(m, k).astype(np.float32)
    b = np.random.rand(k, n).astype(np.float32)
    a @ b
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    return 2 * m * k * n / sorted(ts)[len(ts) // 2] / 1e9


if __name__ == "__main__":
    shapes = [(1024, 384, 1536), (1024, 1536, 384), (512, 576, 1536), (1024, 1024, 1024)]
    rates = [rate(*s) for s in shapes]
    print(json.dumps({"sgemm_gflops": max(rates), "per_shape": dict(zip(map(str, shapes), rates))}))
