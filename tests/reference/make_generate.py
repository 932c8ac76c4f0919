"""Greedy continuations from Hugging Face `generate` on the SmolLM2 GGUF
(dequantized to fp32), without and with a LoRA adapter, for
tests/cli_generate.rs: peftc's greedy output must equal them token for token.

    ~/.cache/peftc/venv/bin/python tests/reference/make_generate.py

Writes tests/fixtures/generate/lora/ (a Hugging Face PEFT adapter: LoRA r=4
on q, v, seeded, B nonzero so it changes the text) and
tests/fixtures/generate/greedy.json.
"""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

CACHE = os.environ.get("PEFTC_CACHE", os.path.expanduser("~/.cache/peftc"))
FOLDER = os.path.join(CACHE, "assets", "SmolLM2-135M-Instruct")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "generate")
PROMPTS = [
    "The BBC reported on Tuesday that",
    "Gardening tips for the spring:",
    "def fibonacci(n):",
]
NEW = 24


def greedy(model, tok, text):
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=NEW, do_sample=False, pad_token_id=tok.eos_token_id)
    new = out[0][ids.shape[1]:].tolist()
    if new and new[-1] == tok.eos_token_id:
        new = new[:-1]
    return ids[0].tolist(), new


def main():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(FOLDER, gguf_file=GGUF, torch_dtype=torch.float32)
    model.eval()
    tok = AutoTokenizer.from_pretrained(FOLDER, gguf_file=GGUF)
    cases = []
    for p in PROMPTS:
        ids, base = greedy(model, tok, p)
        cases.append({"prompt": p, "prompt_ids": ids, "base": base})
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    lora = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn_like(p))
    lora.eval()
    for c in cases:
        _, c["lora"] = greedy(lora, tok, c["prompt"])
        c["lora_text"] = tok.decode(c["lora"])
        c["base_text"] = tok.decode(c["base"])
    lora.save_pretrained(os.path.join(OUT, "lora"))
    with open(os.path.join(OUT, "greedy.json"), "w") as f:
        json.dump({"max_tokens": NEW, "cases": cases}, f, indent=1)
    for c in cases:
        print(repr(c["prompt"]), "->", repr(c["base_text"]), "| lora:", repr(c["lora_text"]))


if __name__ == "__main__":
    main()
