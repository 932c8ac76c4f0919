"""Smoke check: Hugging Face transformers loads the SmolLM2 GGUF (dequantized to fp32)
and its tokenizer, and greedy-generates a short answer. Prints load times.

    ~/.cache/peftc/venv/bin/python tests/reference/gguf_load_check.py

Needs scripts/fetch-assets first. Takes ~20 s on 2 CPU cores.
"""

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

CACHE = os.environ.get("PEFTC_CACHE", os.path.expanduser("~/.cache/peftc"))
FOLDER = os.path.join(CACHE, "assets", "SmolLM2-135M-Instruct")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main():
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(FOLDER, gguf_file=GGUF)
    t_model = time.time() - t0
    c = model.config
    tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    print(f"model: {type(model).__name__} {model.num_parameters():,} params {model.dtype}, "
          f"load {t_model:.1f}s, tied={tied}")
    print({k: getattr(c, k, None) for k in ["hidden_size", "intermediate_size", "num_hidden_layers",
                                              "num_attention_heads", "num_key_value_heads", "vocab_size",
                                              "tie_word_embeddings", "max_position_embeddings", "rms_norm_eps",
                                              "bos_token_id", "eos_token_id", "pad_token_id"]},
          "rope:", getattr(c, "rope_parameters", None) or getattr(c, "rope_theta", None))
    t1 = time.time()
    tok = AutoTokenizer.from_pretrained(FOLDER, gguf_file=GGUF)
    print(f"tokenizer: {type(tok).__name__} vocab {len(tok)}, load {time.time() - t1:.1f}s")
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt")
    if not torch.is_tensor(ids):
        ids = ids["input_ids"]
    out = model.generate(ids, max_new_tokens=20, do_sample=False)
    text = tok.decode(out[0][ids.shape[1]:])
    print("greedy answer:", repr(text))
    assert "Paris" in text, "GGUF load produced unexpected text"


if __name__ == "__main__":
    main()
