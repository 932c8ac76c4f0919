"""Reference for Qwen2.5-Coder-0.5B-Instruct (GGUF): tokenizer ids and logits from transformers.

Run with the reference venv (scripts/setup-reference-venv):

    ~/.cache/peftc/venv/bin/python tests/reference/make_qwen2.py

transformers loads the same GGUF file peftc reads (`from_pretrained(dir, gguf_file=...)`),
dequantizes every tensor to fp32 and builds the tokenizer from the GGUF's vocabulary. Writes
`tests/fixtures/qwen2/`:

- `case.json`: versions, the tokenizer probe texts and their ids (no special tokens added), the
  held-out texts, their ids, the logits positions, each text's mean next-token loss, and the
  ChatML rendering of a conversation with its ids.
- `logits.safetensors`: `logits.<i>` f32 `[len(positions[i]), vocab]`, the logits at the chosen
  positions of held-out text i (one sequence, no padding).
"""

import json
import os
import sys
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PEFTC_CACHE", Path.home() / ".cache/peftc"))
DIR = CACHE / "assets/Qwen2.5-Coder-0.5B-Instruct"
GGUF = "qwen2.5-coder-0.5b-instruct.gguf"
OUT = REPO / "tests/fixtures/qwen2"

# Tokenizer probes: contractions in both cases, digit runs, CJK, accents (NFC vs NFD),
# punctuation runs, tabs, several newlines, trailing spaces, code, special tokens.
PROBES = [
    "Hello world! It's 2026, and we'll fine-tune 12345 models.",
    "I'M HERE, YOU'RE THERE, THEY'VE GONE, HE'D SAY, SHE'LL GO.",
    "def add(a, b):\n    return a + b\n\n\nprint(add(3, 41))",
    "caf\u00e9 vs cafe\u0301 \u2014 na\u00efve r\u00e9sum\u00e9",
    "\u91cf\u5316\u6a21\u578b\u7684\u5fae\u8c03 \u3068 \u65e5\u672c\u8a9e\u306e\u6587",
    "tabs\tand  double  spaces   and trailing   ",
    "!!! ??? ... --> <= >= != == ;;\n\n",
    "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>",
    "  leading spaces and\r\nCRLF line ends\r\n",
    "emoji \U0001f600\U0001f680 and \u00a0non-breaking\u00a0space",
]

# Held-out texts (written for this fixture; not in any training set).
HELD_OUT = [
    "The ladder side network reads down-projected hidden states, so backward never enters "
    "the frozen backbone. Its memory stays small while the base model is quantized to four bits.",
    "fn main() {\n    let xs: Vec<u32> = (1..=10).map(|x| x * x).collect();\n"
    "    println!(\"{}\", xs.iter().sum::<u32>());\n}\n",
]

CHAT = [
    {"role": "system", "content": "You are a helpful coding assistant."},
    {"role": "user", "content": "Write a Python function that reverses a string."},
]


def main():
    if not (DIR / GGUF).is_file():
        sys.exit(f"missing {DIR / GGUF}: run scripts/fetch-assets")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(DIR), gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(str(DIR), gguf_file=GGUF, dtype=torch.float32)
    model.eval()
    probes = [{"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]} for t in PROBES]
    tensors, held = {}, []
    for i, text in enumerate(HELD_OUT):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ids])
        with torch.no_grad():
            out = model(input_ids=x, labels=x)
        n = len(ids)
        positions = sorted({0, n // 3, (2 * n) // 3, n - 1})
        tensors[f"logits.{i}"] = out.logits[0, positions].contiguous()
        held.append({"text": text, "ids": ids, "positions": positions, "loss": out.loss.item()})
        print(f"held-out {i}: {n} tokens, loss {out.loss.item():.5f}", flush=True)
    chat_text = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    case = {
        "model": f"{DIR.name}/{GGUF}",
        "gguf_bytes": (DIR / GGUF).stat().st_size,
        "vocab": model.config.vocab_size,
        "tie_word_embeddings": model.config.tie_word_embeddings,
        "rope_theta": getattr(model.config, "rope_theta", None)
        or model.config.rope_parameters.get("rope_theta"),
        "versions": {n: version(n) for n in ["torch", "transformers", "gguf", "tokenizers"]},
        "notes": "transformers' GGUF load, dequantized to fp32, eval mode; tokenizer built by "
        "transformers from the GGUF vocabulary; ids without special tokens added",
        "probes": probes,
        "held_out": held,
        "chat": {"messages": CHAT, "text": chat_text,
                 "ids": tok(chat_text, add_special_tokens=False)["input_ids"]},
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "case.json").write_text(json.dumps(case, indent=1, ensure_ascii=False) + "\n")
    save_file(tensors, str(OUT / "logits.safetensors"))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
