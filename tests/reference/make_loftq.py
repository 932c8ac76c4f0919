"""Reference for `lora(..., init=loftq, loftq_iter=T)` on `model "..." quantize nf4`.

Run with the reference venv (scripts/setup-reference-venv):

    ~/.cache/peftc/venv/bin/python tests/reference/make_loftq.py

On MiniLM's `encoder.layer.0.attention.self.query.weight` (384 x 384), rank 8, writes
`tests/fixtures/quant/loftq.safetensors` with, for T = 1 and 2:

- `loftq{T}.A` `[8, 384]`, `loftq{T}.B` `[384, 8]`: the LoRA factors (lora_A = R, lora_B = L of
  peft's `_low_rank_decomposition`, the SVD step of `loftq_utils`);
- `loftq{T}.S` `[8]`: the top singular values of the last quantization error;
- `loftq{T}.codes` u8 `[73728]`: the final base's NF4 nibbles.

T = 1 is PEFT's `replace_lora_weights_loftq` (`_loftq_init_new`) on a QLoRA base: residual
`W - dequantize_4bit(Q)` of the 4-bit weight as transformers + bitsandbytes hold it (NF4, double
quantization), then `_low_rank_decomposition`. T = 2 is `loftq_init`'s loop (quantize `res`,
residual, SVD, `res = W - L R`) with that same NF4 coding: `loftq_init` itself quantizes without
double quantization and runs on CUDA only, so the loop is written out here around bitsandbytes'
and PEFT's own functions. Block scales are re-coded with the nearest dynamic code
(`nf4_nearest.py` says why), as in `make_golden.py`.
"""

import os
from pathlib import Path

import bitsandbytes as bnb
import peft
import torch
from bitsandbytes.functional import dequantize_4bit, quantize_4bit
from peft.utils.loftq_utils import _low_rank_decomposition
from nf4_nearest import recode_nearest
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PEFTC_CACHE", Path.home() / ".cache/peftc"))
MODEL = CACHE / "assets/all-MiniLM-L6-v2/model.safetensors"
OUT = REPO / "tests/fixtures/quant/loftq.safetensors"
R = 8


def nf4(t):
    """bitsandbytes' NF4 with double quantization, block scales re-coded to the nearest code."""
    q, st = quantize_4bit(t, blocksize=64, quant_type="nf4", compress_statistics=True)
    recode_nearest(t, st)
    return q, st


w = load_file(MODEL)["encoder.layer.0.attention.self.query.weight"].float().contiguous()
out = {}
for T in (1, 2):
    res = w.clone()
    for i in range(T):
        q, st = nf4(res)
        residual = w - dequantize_4bit(q, st)
        d = _low_rank_decomposition(residual, reduced_rank=R)
        L, Rm = d["L"], d["R"]
        if i + 1 < T:
            res = w - L @ Rm
    out[f"loftq{T}.A"] = Rm.contiguous()
    out[f"loftq{T}.B"] = L.contiguous()
    out[f"loftq{T}.S"] = d["S"][:R].contiguous()
    out[f"loftq{T}.codes"] = q.reshape(-1).contiguous()
    err0 = residual.norm().item()
    err = (residual - L @ Rm).norm().item()
    print(f"T={T}: |W - Q| = {err0:.4f}, |W - Q - BA| = {err:.4f}")
OUT.parent.mkdir(parents=True, exist_ok=True)
save_file(out, OUT, metadata={"bitsandbytes": bnb.__version__, "peft": peft.__version__,
                              "torch": torch.__version__})
print(f"wrote {OUT}")
