"""Loads an adapter that `peftc export --format hf` wrote with Hugging Face PEFT and prints
the logits for texts as JSON, to compare with `peftc infer --json` on the same texts.

    python tests/reference/check_export.py --model DIR_OR_GGUF --adapter DIR --task classify|causal_lm \
        --text "..." [--text ...] [--peftc-json FILE]

With --peftc-json (the output of `peftc infer --json`) it also prints the max abs diff and exits 1
when it is above 1e-4.
"""

import argparse
import json
import os
import sys
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402


def load(model, task, num_labels):
    kw = {"torch_dtype": torch.float32}
    if model.endswith(".gguf"):
        folder, name = os.path.split(model)
        kw["gguf_file"] = name
        model = folder
    if task == "classify":
        return AutoModelForSequenceClassification.from_pretrained(model, num_labels=num_labels, **kw), model, kw
    return AutoModelForCausalLM.from_pretrained(model, **kw), model, kw


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--task", choices=["classify", "causal_lm"], required=True)
    ap.add_argument("--num-labels", type=int, default=2)
    ap.add_argument("--text", action="append", required=True)
    ap.add_argument("--peftc-json")
    a = ap.parse_args()
    base, folder, kw = load(a.model, a.task, a.num_labels)
    tok = AutoTokenizer.from_pretrained(folder, **({"gguf_file": kw["gguf_file"]} if "gguf_file" in kw else {}))
    m = PeftModel.from_pretrained(base, a.adapter).eval()
    rows = []
    with torch.no_grad():
        for t in a.text:
            enc = tok(t, return_tensors="pt", add_special_tokens=(a.task == "classify"))
            out = m(**{k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}).logits
            rows.append((out[0] if a.task == "classify" else out[0, -1]).tolist())
    print(json.dumps({"logits": rows}))
    if a.peftc_json:
        ours = json.load(open(a.peftc_json))["logits"]
        diff = max(abs(x - y) for r1, r2 in zip(rows, ours) for x, y in zip(r1, r2))
        print(f"max abs diff vs peftc: {diff:.3e}", file=sys.stderr)
        sys.exit(0 if diff <= 1e-4 else 1)


if __name__ == "__main__":
    main()
