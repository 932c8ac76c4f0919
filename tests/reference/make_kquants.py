"""Writes tests/fixtures/gguf/blocks.json: random ggml blocks of every type
peftc decodes, and the f32 values gguf-py's `quants.dequantize` gives them.

Run in the reference venv (scripts/setup-reference-venv):
    ~/.cache/peftc/venv/bin/python tests/reference/make_kquants.py
"""

import json
import pathlib

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

# type -> (block bytes, byte offsets of its f16 scale fields)
LAYOUT = {
    "q4_0": (T.Q4_0, 18, [0]),
    "q4_1": (T.Q4_1, 20, [0, 2]),
    "q5_0": (T.Q5_0, 22, [0]),
    "q5_1": (T.Q5_1, 24, [0, 2]),
    "q8_0": (T.Q8_0, 34, [0]),
    "q2_k": (T.Q2_K, 84, [80, 82]),
    "q3_k": (T.Q3_K, 110, [108]),
    "q4_k": (T.Q4_K, 144, [0, 2]),
    "q5_k": (T.Q5_K, 176, [0, 2]),
    "q6_k": (T.Q6_K, 210, [208]),
}

rng = np.random.default_rng(20261202)
out = {}
for name, (qtype, block, scales) in LAYOUT.items():
    blocks = 3
    raw = rng.integers(0, 256, size=(blocks, block), dtype=np.uint8)
    for b in range(blocks):
        for at in scales:
            v = np.float16(rng.uniform(-0.1, 0.1))
            raw[b, at : at + 2] = np.frombuffer(v.tobytes(), dtype=np.uint8)
    values = quants.dequantize(raw.reshape(-1), qtype).reshape(-1)
    out[name] = {
        "bytes": raw.reshape(-1).tobytes().hex(),
        "values": [float(v) for v in values.astype(np.float32)],
    }

path = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "gguf" / "blocks.json"
path.write_text(json.dumps(out) + "\n")
print(f"wrote {path}")
