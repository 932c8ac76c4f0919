"""The Hugging Face baseline of peftc's main job: LoRA r=8 (alpha 16, dropout 0.05) on
MiniLM's query and value projections, SMS spam, one epoch, batch 16, seq 64, lr 5e-4 with
linear decay, AdamW, gradient clipping 1.0 — the same budget as examples/minilm-sms-lora.peft
— on the same train / held-out split. Prints the held-out accuracy as JSON.

    python benches/compare/hf_train_sms.py
"""

import json
import os
import random
import sys
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup  # noqa: E402

from splits import split  # noqa: E402
from workloads import MINILM, MINILM_QV, SMS  # noqa: E402


def main():
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    torch.manual_seed(0)
    random.seed(0)
    rows = [l.rstrip("\n").split("\t", 1) for l in open(SMS, encoding="utf-8", errors="replace") if "\t" in l]
    rows = [(a.strip(), b.strip()) for a, b in rows if a.strip() and b.strip()]
    labels = sorted({a for a, _ in rows})
    train_idx, eval_idx = split(len(rows), 0.1, 0)
    tok = Tokenizer.from_file(os.path.join(MINILM, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()

    def encode(i):
        ids = tok.encode(rows[i][1]).ids
        return ids if len(ids) <= 64 else ids[:63] + [ids[-1]]

    def batch(idx):
        seqs = [encode(i) for i in idx]
        s = max(len(x) for x in seqs)
        ids = torch.zeros(len(seqs), s, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, x in enumerate(seqs):
            ids[r, : len(x)] = torch.tensor(x)
            mask[r, : len(x)] = 1
        y = torch.tensor([labels.index(rows[i][0]) for i in idx])
        return ids, mask, y

    model = AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=len(labels))
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.05, target_modules=MINILM_QV))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.0)
    order = list(train_idx)
    random.shuffle(order)
    steps = (len(order) + 15) // 16
    sched = get_linear_schedule_with_warmup(opt, 0, steps)
    model.train()
    t0 = time.time()
    for s in range(steps):
        ids, mask, y = batch(order[s * 16 : (s + 1) * 16])
        loss = model(input_ids=ids, attention_mask=mask, labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    train_s = time.time() - t0
    model.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(eval_idx), 16):
            ids, mask, y = batch(eval_idx[s : s + 16])
            correct += (model(input_ids=ids, attention_mask=mask).logits.argmax(-1) == y).sum().item()
    print(json.dumps({"accuracy": correct / len(eval_idx), "examples": len(eval_idx), "steps": steps, "train_seconds": train_s}))


if __name__ == "__main__":
    main()
