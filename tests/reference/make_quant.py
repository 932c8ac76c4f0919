"""Reference for `model "DIR" quantize nf4|int8`: bitsandbytes' own quantization of a real weight.

Run with the reference venv (scripts/setup-reference-venv, plus `pip install bitsandbytes`):

    ~/.cache/peftc/venv/bin/python tests/reference/make_quant.py

Takes rows 0..320 of MiniLM's `encoder.layer.0.attention.self.query.weight` (320 x 384: 1,920
blocks of 64, so the double quantization's 256-block groups end in a partial one) and writes
`tests/fixtures/quant/bnb.safetensors`:

- `nf4.codes` u8 `[61440]`: `quantize_4bit(W, blocksize=64, quant_type="nf4",
  compress_statistics=True)`'s packed nibbles (first value in the high nibble);
- `nf4.qabsmax` u8 `[1920]`, `nf4.absmax2` f32 `[8]`, `nf4.offset` f32 `[1]`: the double-quantized
  block scales (8-bit dynamic code, blocks of 256, after subtracting the mean);
- `nf4.code` f32 `[16]` and `dynamic.code` f32 `[256]`: the two code books;
- `nf4.dequant` f32 `[320, 384]`: `dequantize_4bit` of the above;
- `int8.q` i8 `[320, 384]`, `int8.scale` f32 `[320]`:
  `int8_vectorwise_quant` (LLM.int8's row-wise absmax, as `Linear8bitLt` stores its weight;
  it dequantizes as `q * scale / 127`).
"""

import os
from pathlib import Path

import bitsandbytes as bnb
import torch
from bitsandbytes.functional import dequantize_4bit, int8_vectorwise_quant, quantize_4bit
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PEFTC_CACHE", Path.home() / ".cache/peftc"))
MODEL = CACHE / "assets/all-MiniLM-L6-v2/model.safetensors"
OUT = REPO / "tests/fixtures/quant/bnb.safetensors"

w = load_file(MODEL)["encoder.layer.0.attention.self.query.weight"][:320].contiguous().float()
q, st = quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
assert st.nested and st.state2.blocksize == 256
deq = dequantize_4bit(q, st)
q8, scale, _ = int8_vectorwise_quant(w.clone())
out = {
    "nf4.codes": q.reshape(-1).contiguous(),
    "nf4.qabsmax": st.absmax.contiguous(),
    "nf4.absmax2": st.state2.absmax.float().contiguous(),
    "nf4.offset": st.offset.reshape(1).float(),
    "nf4.code": st.code.float().contiguous(),
    "dynamic.code": st.state2.code.float().contiguous(),
    "nf4.dequant": deq.contiguous(),
    "int8.q": q8.contiguous(),
    "int8.scale": scale.float().contiguous(),

}
OUT.parent.mkdir(parents=True, exist_ok=True)
save_file(out, OUT, metadata={"bitsandbytes": bnb.__version__, "torch": torch.__version__})
print(f"wrote {OUT}: max |W - nf4| = {(deq - w).abs().max():.4f}, bitsandbytes {bnb.__version__}")
