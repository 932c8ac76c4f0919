"""Chat prompts rendered by transformers' `apply_chat_template` (the GGUF's
own template) and their greedy continuations from Hugging Face `generate`,
without and with the LoRA fixture, for tests/cli_serve.rs: peftc serve's
/v1/chat/completions must render the same prompt and continue it the same.

    ~/.cache/peftc/venv/bin/python tests/reference/make_chat.py

Reads tests/fixtures/generate/lora/ (make_generate.py); writes
tests/fixtures/generate/chat.json.
"""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

CACHE = os.environ.get("PEFTC_CACHE", os.path.expanduser("~/.cache/peftc"))
FOLDER = os.path.join(CACHE, "assets", "SmolLM2-135M-Instruct")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "generate")
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "Why is the sky blue?"},
    ],
]
NEW = 16


def greedy(model, tok, ids):
    t = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(t, max_new_tokens=NEW, do_sample=False, pad_token_id=tok.eos_token_id)
    new = out[0][len(ids):].tolist()
    if new and new[-1] == tok.eos_token_id:
        new = new[:-1]
    return new


def main():
    model = AutoModelForCausalLM.from_pretrained(FOLDER, gguf_file=GGUF, torch_dtype=torch.float32)
    model.eval()
    tok = AutoTokenizer.from_pretrained(FOLDER, gguf_file=GGUF)
    cases = []
    for messages in CHATS:
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        base = greedy(model, tok, ids)
        cases.append({"messages": messages, "text": text, "prompt_ids": ids, "base": base,
                      "base_text": tok.decode(base, skip_special_tokens=True)})
    lora = PeftModel.from_pretrained(model, os.path.join(OUT, "lora"))
    lora.eval()
    for c in cases:
        c["lora"] = greedy(lora, tok, c["prompt_ids"])
        c["lora_text"] = tok.decode(c["lora"], skip_special_tokens=True)
    with open(os.path.join(OUT, "chat.json"), "w") as f:
        json.dump({"max_tokens": NEW, "eos_token_id": tok.eos_token_id, "cases": cases}, f, indent=1)
    for c in cases:
        print(repr(c["text"]), "->", repr(c["base_text"]), "| lora:", repr(c["lora_text"]))


if __name__ == "__main__":
    main()
