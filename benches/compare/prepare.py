"""Tokenizes real data into fixed batches both stacks train on: SMS spam texts padded
to the workload's seq (classification), or BBC News text cut into windows (causal LM).
Writes <out>/<workload>.safetensors with input_ids, attention_mask, labels."""

import glob
import os
import sys

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

from workloads import BBC, SMS, WORKLOADS

N_BATCHES = 8


def sms_batches(w):
    tok = Tokenizer.from_file(os.path.join(w["model"], "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    rows = [l.split("\t", 1) for l in open(SMS, encoding="utf-8", errors="replace") if "\t" in l]
    b, s = w["batch"], w["seq"]
    ids = torch.zeros(N_BATCHES * b, s, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    labels = torch.zeros(N_BATCHES * b, dtype=torch.int64)
    for i in range(N_BATCHES * b):
        label, text = rows[i]
        enc = tok.encode(text.strip()).ids
        if len(enc) > s:
            enc = enc[: s - 1] + [enc[-1]]  # keep [SEP]
        ids[i, : len(enc)] = torch.tensor(enc)
        mask[i, : len(enc)] = 1
        labels[i] = 1 if label.strip() == "spam" else 0
    return ids, mask, labels


def bbc_batches(w):
    sys.path.insert(0, os.path.dirname(__file__))
    from transformers import AutoTokenizer

    folder, name = os.path.split(w["model"])
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    text = "".join(open(f, encoding="utf-8", errors="replace").read() for f in sorted(glob.glob(os.path.join(BBC, "*", "*.txt")))[:200])
    stream = tok(text, add_special_tokens=False)["input_ids"]
    b, s = w["batch"], w["seq"]
    n = N_BATCHES * b
    ids = torch.tensor(stream[: n * s], dtype=torch.int64).view(n, s)
    return ids, torch.ones_like(ids), ids.clone()


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, w in WORKLOADS.items():
        path = os.path.join(out, f"{name}.safetensors")
        if os.path.exists(path):
            continue
        ids, mask, labels = sms_batches(w) if w["task"] == "classify" else bbc_batches(w)
        save_file({"input_ids": ids, "attention_mask": mask, "labels": labels}, path)
        print(f"prepared {path}: {tuple(ids.shape)}", file=sys.stderr)


if __name__ == "__main__":
    main()
