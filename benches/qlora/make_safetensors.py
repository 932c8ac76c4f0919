"""Writes a full-precision safetensors copy of Qwen2.5-Coder-0.5B-Instruct for the QLoRA bench.

transformers dequantizes the GGUF asset (scripts/fetch-assets) to float32 and saves it as a
Hugging Face folder (config.json, model.safetensors, tokenizer files):

    ~/.cache/peftc/venv/bin/python benches/qlora/make_safetensors.py

into ~/.cache/peftc/assets/qwen2.5-0.5b-f32 (about 2 GB), which `benches/qlora/run.sh` trains
with and without `quantize nf4`.
"""

import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

CACHE = Path(os.environ.get("PEFTC_CACHE", Path.home() / ".cache/peftc"))
SRC = CACHE / "assets/Qwen2.5-Coder-0.5B-Instruct"
GGUF = "qwen2.5-coder-0.5b-instruct.gguf"
OUT = CACHE / "assets/qwen2.5-0.5b-f32"

if (OUT / "model.safetensors").exists():
    print(f"{OUT} exists")
else:
    tok = AutoTokenizer.from_pretrained(str(SRC), gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(str(SRC), gguf_file=GGUF, dtype=torch.float32)
    tmp = OUT.with_name(OUT.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    # save_pretrained refuses a GGUF-loaded model (its GGUF "quantizer" is not serializable):
    # write the dequantized state dict and the config directly.
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    tmp.rename(OUT)
    print(f"wrote {OUT}")
