"""Single-sequence generation on SmolLM2-135M (Q4_1 GGUF, dequantized to f32 by
both): peftc generate (KV cache, CPU) against Hugging Face transformers'
generate (KV cache, torch CPU), greedy, same prompt, same number of new
tokens, same thread count, in one run. Prints a table and writes
benches/generate/results.json.

    ~/.cache/peftc/venv/bin/python benches/generate/run.py [--tokens 64] [--threads 2]

Needs the release binary (cargo build --release) and scripts/fetch-assets.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PEFTC = os.environ.get("PEFTC_BIN", os.path.join(ROOT, "target", "release", "peftc"))
CACHE = os.environ.get("PEFTC_CACHE", os.path.expanduser("~/.cache/peftc"))
FOLDER = os.path.join(CACHE, "assets", "SmolLM2-135M-Instruct")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ADAPTER = os.path.join(ROOT, "tests", "fixtures", "generate", "lora")
PROMPT = "Gardening tips for the spring:"


def peftc(spec, n, adapter):
    args = [PEFTC, "generate", spec, "--json", "--prompt", PROMPT, "--max-tokens", str(n)]
    if adapter:
        args += ["--adapter", ADAPTER]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    return len(r["tokens"]), r["prefill_seconds"], r["decode_seconds"]


def hf(n, adapter, threads):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(FOLDER, gguf_file=GGUF, dtype=torch.float32).eval()
    if adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, ADAPTER).eval()
    tok = AutoTokenizer.from_pretrained(FOLDER, gguf_file=GGUF)
    ids = tok(PROMPT, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        t0 = time.time()
        model(ids)
        prefill = time.time() - t0
        model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.eos_token_id)
        t0 = time.time()
        out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             pad_token_id=tok.eos_token_id)
        total = time.time() - t0
    new = out.shape[1] - ids.shape[1]
    # generate's time less one prefill: the decode steps.
    return new, prefill, total - prefill


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(a.threads)
    with tempfile.TemporaryDirectory() as d:
        spec = os.path.join(d, "g.peft")
        with open(spec, "w") as f:
            f.write(f'model "{os.path.join(FOLDER, GGUF)}"\npeft b {{\n    lora(r=4, alpha=8) on layers[*].attn.{{q, v}}\n}}\n'
                    "train {\n    adapter = b\n    task = causal_lm\n}\n")
        rows = []
        for adapter in [False, True]:
            pn, pp, pd = peftc(spec, a.tokens, adapter)
            hn, hp, hd = hf(a.tokens, adapter, a.threads)
            rows.append({
                "adapter": "LoRA r=4 q,v (unmerged)" if adapter else "none",
                "peftc_tokens": pn, "peftc_prefill_s": pp, "peftc_decode_tok_s": (pn - 1) / pd if pn > 1 else None,
                "hf_tokens": hn, "hf_prefill_s": hp, "hf_decode_tok_s": (hn - 1) / hd if hn > 1 else None,
            })
    print(f"| adapter | peftc decode tok/s | HF decode tok/s | ratio | peftc prefill s | HF prefill s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["peftc_decode_tok_s"] / r["hf_decode_tok_s"]
        r["ratio"] = ratio
        print(f"| {r['adapter']} | {r['peftc_decode_tok_s']:.1f} | {r['hf_decode_tok_s']:.1f} | {ratio:.2f}x | "
              f"{r['peftc_prefill_s']:.3f} | {r['hf_prefill_s']:.3f} |")
    cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name'"], capture_output=True, text=True).stdout.strip()
    with open(os.path.join(os.path.dirname(__file__), "results.json"), "w") as f:
        json.dump({"tokens": a.tokens, "threads": a.threads, "cpu": cpu, "prompt": PROMPT, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
