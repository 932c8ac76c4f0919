"""Scores one batch with several LoRA adapters mixed in it, with Hugging Face
transformers + PEFT (`adapter_names=`, torch CPU fp32), and prints JSON: per-batch
wall times, peak RSS, and a few logits per row to check peftc's against.

    python hf_multi_lora.py ADAPTERS_DIR BATCHES.safetensors ROWS WARMUP STEPS

On first use it writes ROWS random LoRA adapters (r=8, q and v, nonzero B) in Hugging
Face PEFT's format under ADAPTERS_DIR/a0 ... (peftc loads the same folders).
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
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from workloads import SMOL  # noqa: E402

CHECK_POSITION = 10


def base():
    folder, name = os.path.split(SMOL)
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)


def write_adapters(root, n):
    for k in range(n):
        out = os.path.join(root, f"a{k}")
        if os.path.exists(os.path.join(out, "adapter_model.safetensors")):
            continue
        torch.manual_seed(100 + k)
        cfg = LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        m = get_peft_model(base(), cfg)
        with torch.no_grad():
            for name, p in m.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.02)
        m.save_pretrained(out)


def main():
    root, path, rows, warmup, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    write_adapters(root, rows)
    model = PeftModel.from_pretrained(base(), os.path.join(root, "a0"), adapter_name="a0")
    for k in range(1, rows):
        model.load_adapter(os.path.join(root, f"a{k}"), adapter_name=f"a{k}")
    model.eval()
    data = load_file(path)
    ids, mask = data["input_ids"][:rows], data["attention_mask"][:rows]
    names = [f"a{k}" for k in range(rows)]
    times = []
    with torch.no_grad():
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            logits = model(input_ids=ids, attention_mask=mask, adapter_names=names).logits
            dt = time.perf_counter() - t0
            if i >= warmup:
                times.append(dt)
    check = [[float(v) for v in logits[r, CHECK_POSITION, :4]] for r in range(rows)]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"side": "hf", "step_times": times, "peak_rss_bytes": rss, "check": check}))


if __name__ == "__main__":
    main()
