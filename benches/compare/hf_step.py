"""Trains one workload with Hugging Face transformers + PEFT (torch, CPU, fp32) on the
prepared batches and prints JSON: per-step wall times and peak RSS.

    python hf_step.py WORKLOAD BATCHES.safetensors WARMUP STEPS
"""

import json
import os
import resource
import sys
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
from peft import IA3Config, LoraConfig, PromptTuningConfig, get_peft_model  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification  # noqa: E402

from workloads import LR, SEED, WORKLOADS  # noqa: E402


def build(w):
    if w["task"] == "classify":
        model = AutoModelForSequenceClassification.from_pretrained(w["model"], num_labels=2, dtype=torch.float32)
        task = "SEQ_CLS"
    else:
        folder, name = os.path.split(w["model"])
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        task = "CAUSAL_LM"
    h = dict(w["hf"])
    kind = h.pop("kind")
    cfg = {
        "lora": lambda: LoraConfig(task_type=task, **h),
        "ia3": lambda: IA3Config(task_type=task, **h),
        "prompt": lambda: PromptTuningConfig(task_type=task, **h),
    }[kind]()
    return get_peft_model(model, cfg)


def main():
    name, path, warmup, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    torch.manual_seed(SEED)
    w = WORKLOADS[name]
    data = load_file(path)
    model = build(w)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    n = data["input_ids"].shape[0] // w["batch"]
    # A causal LM's last batch is held out and scored after the steps (peftc's side too).
    held = None
    if w["task"] == "causal_lm" and n > 1:
        n -= 1
        sl = slice(n * w["batch"], (n + 1) * w["batch"])
        held = {"input_ids": data["input_ids"][sl], "attention_mask": data["attention_mask"][sl], "labels": data["labels"][sl]}
    times = []
    for i in range(warmup + steps):
        j = i % n
        sl = slice(j * w["batch"], (j + 1) * w["batch"])
        batch = {"input_ids": data["input_ids"][sl], "attention_mask": data["attention_mask"][sl], "labels": data["labels"][sl]}
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    heldout = None
    if held is not None:
        model.eval()
        with torch.no_grad():
            heldout = float(model(**held).loss)
    print(json.dumps({"side": "hf", "workload": name, "step_times": times, "peak_rss_bytes": rss,
                      "final_loss": float(loss), "heldout_loss": heldout}))


if __name__ == "__main__":
    main()
