"""Trains each workload with the peftc binary and reports what the README's
selective-methods table shows. Standard library only; see `run` for usage."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PEFTC = os.environ.get("PEFTC_BIN", os.path.join(ROOT, "target", "release", "peftc"))
MINILM = os.path.join(ROOT, "assets", "all-MiniLM-L6-v2")
SMOLLM2 = os.path.join(ROOT, "assets", "SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")
SMS = os.path.join(ROOT, "assets", "sms", "spam_collection.csv")
BBC = os.path.join(ROOT, "assets", "bbcnews")

# (name, statement, train-block extras); LoRA first: the reference row.
MINILM_METHODS = [
    ("lora r=8 (q, v)", "lora(r=8, alpha=16) on layers[*].attn.{q, v}", ""),
    ("mask magnitude 0.1% (all linear)", "mask(density=0.001) on layers[*].attn.{q, k, v, o}, layers[*].mlp.{up, down}", ""),
    ("mask fisher 0.1% (all linear)", "mask(density=0.001, by=fisher) on layers[*].attn.{q, k, v, o}, layers[*].mlp.{up, down}", ""),
    ("mask LT-SFT 0.1% (all linear)", "mask(density=0.001, by=lt_sft, warmup_steps=50) on layers[*].attn.{q, k, v, o}, layers[*].mlp.{up, down}", ""),
    ("mask diff pruning 0.1% (all linear)", "mask(density=0.001, by=diff_pruning, warmup_steps=50) on layers[*].attn.{q, k, v, o}, layers[*].mlp.{up, down}", ""),
    ("sparse adapter 64, 75% pruned (SNIP)", "adapter(bottleneck=64, sparsity=0.75, prune=snip) after layers[*].mlp", ""),
    ("mask random 0.1% (all linear)", "mask(density=0.001, by=random) on layers[*].attn.{q, k, v, o}, layers[*].mlp.{up, down}", ""),
    ("FAR rows 2% (mlp.up)", "mask(density=0.02, structure=row) on layers[*].mlp.up", ""),
    ("ssf (q, v, mlp.down)", "ssf() after layers[*].attn.{q, v}, layers[*].mlp.down", ""),
    ("full (layer 5 attn)", "full() on layers[5].attn", ""),
    ("dylora r=8 (q, v)", "dylora(r=8, alpha=16) on layers[*].attn.{q, v}", ""),
    ("adapter 16 + AdapterDrop 0..=3", "adapter(bottleneck=16) after layers[*].mlp", "    adapter_drop = 3\n"),
    ("coda 16, k=16 (every layer)", "coda(bottleneck=16, k=16) beside layers[*]", ""),
    ("lst r=8 (every layer)", "lst(reduction=8) beside layers[*]", ""),
]
SMOLLM2_METHODS = [
    ("lora r=8 (all linear)", "lora(r=8, alpha=16) on layers[*].attn.{q, k, v, o}, layers[*].mlp.{gate, up, down}", ""),
    ("mask magnitude 0.1% (all linear)", "mask(density=0.001) on layers[*].attn.{q, k, v, o}, layers[*].mlp.{gate, up, down}", ""),
    ("mask fisher 0.1% (all linear)", "mask(density=0.001, by=fisher, calib=8) on layers[*].attn.{q, k, v, o}, layers[*].mlp.{gate, up, down}", ""),
    ("mask LT-SFT 0.1% (all linear)", "mask(density=0.001, by=lt_sft, warmup_steps=20) on layers[*].attn.{q, k, v, o}, layers[*].mlp.{gate, up, down}", ""),
    ("FAR rows 1% (mlp.up)", "mask(density=0.01, structure=row) on layers[*].mlp.up", ""),
    ("ssf (attn, mlp)", "ssf() after layers[*].attn, layers[*].mlp", ""),
    ("full (final_norm + layer 29 attn)", "full() on final_norm, layers[29].attn", ""),
    ("dylora r=8 (q, v)", "dylora(r=8, alpha=16) on layers[*].attn.{q, v}", ""),
    ("coda 16, k=32 (every layer)", "coda(bottleneck=16, k=32) beside layers[*]", ""),
    ("lst r=8 (every layer)", "lst(reduction=8) beside layers[*]", ""),
]
# CoDA's inference time against k: one run per k (the router is trained for
# its k), beside the parallel adapter it reduces to when k covers the sequence.
CODA_KS = (128, 64, 32, 16)


def spec(model, task, data, statement, extra, steps, batch, seq, lr, eval_max):
    ev = f"    eval_max = {eval_max}\n" if eval_max else ""
    return (
        f'model "{model}"\npeft b {{\n    {statement}\n}}\n'
        f"train {{\n    adapter = b\n    task = {task}\n    data = \"{data}\"\n"
        f"    max_steps = {steps}\n    batch = {batch}\n    seq_len = {seq}\n    lr = {lr}\n    seed = 0\n{ev}{extra}}}\n"
    )


def run_rss(args):
    """Runs peftc and returns (stdout, peak RSS MiB), RSS from wait4."""
    p = subprocess.Popen([PEFTC] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        sys.exit(f"peftc {' '.join(args)} failed:\n{err}")
    return out, usage.ru_maxrss / 1024.0


def train(d, name, text):
    path = os.path.join(d, f"{abs(hash(name))}.peft")
    with open(path, "w") as f:
        f.write(text)
    compiled = json.loads(run_rss(["compile", path, "--emit", "json"])[0])
    out_dir = path + ".run"
    _, rss = run_rss(["train", path, "--out", out_dir])
    with open(os.path.join(out_dir, "summary.json")) as f:
        summary = json.load(f)
    return path, out_dir, {
        "method": name,
        "trainable_params": compiled["trainable_params"],
        "estimated_peak_mib": compiled["memory_bytes"]["peak"] / 2**20,
        "peak_rss_mib": rss,
        "step_s": summary["seconds"] / max(summary["steps"], 1),
        "eval": summary.get("eval"),
    }


def metric(row):
    e = row["eval"] or {}
    if "accuracy" in e:
        return f"acc {e['accuracy']:.4f}"
    if "perplexity" in e:
        return f"ppl {e['perplexity']:.2f}"
    return "-"


def table(title, rows):
    print(f"\n{title}\n")
    print("| method | held-out | trainable params | peak RSS (estimate) | step |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {metric(r)} | {r['trainable_params']:,} | {r['peak_rss_mib']:.0f} MiB ({r['estimated_peak_mib']:.0f}) | {r['step_s']:.2f} s |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="few steps: checks the script, not the methods")
    ap.add_argument("--only", nargs="*", help="substrings of method names to run")
    a = ap.parse_args()
    keep = lambda n: not a.only or any(o in n for o in a.only)
    ms, ss = (20, 8) if a.quick else (300, 50)
    results = {"minilm_sms": [], "smollm2_bbc": [], "dylora_ranks": [], "adapter_drop": [], "coda_k": []}
    with tempfile.TemporaryDirectory(prefix="peftc-selective-") as d:
        dylora_run = None
        for name, st, extra in MINILM_METHODS:
            if not keep(name):
                continue
            path, out, row = train(d, "minilm " + name, spec(MINILM, "classify", SMS, st, extra, ms, 16, 64, "2e-3", None))
            row["method"] = name
            results["minilm_sms"].append(row)
            print(f"minilm {name}: {metric(row)}, {row['trainable_params']:,} params, {row['peak_rss_mib']:.0f} MiB, {row['step_s']:.2f} s/step", file=sys.stderr)
            if name.startswith("dylora"):
                dylora_run = (path, out)
        if keep("AdapterDrop"):
            # Inference time falls with the layers left out; large adapters
            # after every attention and MLP block make it visible.
            st = "adapter(bottleneck=256) after layers[*].{attn, mlp}"
            path, out, _ = train(d, "adapterdrop-speed", spec(MINILM, "classify", SMS, st, "    adapter_drop = 3\n", ms, 16, 64, "2e-3", None))
            for n in (0, 2, 4, 6):
                flags = ["--adapter-drop", str(n)] if n else []
                best, acc = None, None
                for _ in range(3):
                    t0 = time.time()
                    ev = json.loads(run_rss(["eval", path, "--adapter", out, "--json", "--batch", "64"] + flags)[0])
                    dt = time.time() - t0
                    best, acc = min(best or dt, dt), ev.get("accuracy")
                results["adapter_drop"].append({"dropped_layers": n, "eval_s": best, "accuracy": acc})
        if keep("CoDA"):
            # BBC News texts fill seq_len 128, so k < 128 leaves tokens out of
            # the heavy branch; held-out perplexity and eval wall time.
            rows = [("adapter 64 beside layers", "adapter(bottleneck=64) beside layers[*]")]
            rows += [(f"coda 64, k={k}", f"coda(bottleneck=64, k={k}) beside layers[*]") for k in CODA_KS]
            for name, st in rows:
                path, out, row = train(d, "coda-speed " + name, spec(SMOLLM2, "causal_lm", BBC, st, "", ss, 4, 128, "5e-4", 64))
                best = None
                for _ in range(3):
                    t0 = time.time()
                    ev = json.loads(run_rss(["eval", path, "--adapter", out, "--json"])[0])
                    best = min(best or 1e9, time.time() - t0)
                results["coda_k"].append({"method": name, "eval_s": best, "perplexity": ev.get("perplexity"),
                                          "trainable_params": row["trainable_params"], "step_s": row["step_s"]})
                print(f"coda-speed {name}: eval {best:.2f} s, ppl {ev.get('perplexity')}", file=sys.stderr)
        if dylora_run:
            path, out = dylora_run
            for k in (1, 2, 4, 8):
                ev = json.loads(run_rss(["eval", path, "--adapter", out, "--rank", str(k), "--json"])[0])
                results["dylora_ranks"].append({"rank": k, "accuracy": ev.get("accuracy"), "loss": ev.get("loss")})
        for name, st, extra in SMOLLM2_METHODS:
            if not keep(name):
                continue
            _, _, row = train(d, "smollm2 " + name, spec(SMOLLM2, "causal_lm", BBC, st, extra, ss, 4, 128, "5e-4", 64))
            row["method"] = name
            results["smollm2_bbc"].append(row)
            print(f"smollm2 {name}: {metric(row)}, {row['trainable_params']:,} params, {row['peak_rss_mib']:.0f} MiB, {row['step_s']:.2f} s/step", file=sys.stderr)
    results["steps"] = {"minilm": ms, "smollm2": ss}
    results["date"] = time.strftime("%Y-%m-%d")
    if not a.quick:
        path = os.path.join(ROOT, "benches", "selective", "results.json")
        if a.only and os.path.exists(path):
            # A partial run updates its rows of the last full one.
            with open(path) as f:
                old = json.load(f)
            for key, rows in results.items():
                if not isinstance(rows, list) or not rows:
                    continue
                if key in ("minilm_sms", "smollm2_bbc"):
                    names = {r["method"] for r in rows}
                    rows = [r for r in old.get(key, []) if r["method"] not in names] + rows
                old[key] = rows
            old["date"] = results["date"]
            results = old
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
    table(f"MiniLM + SMS spam ({ms} steps, batch 16 x 64)", results["minilm_sms"])
    table(f"SmolLM2-135M + BBC News ({ss} steps, batch 4 x 128)", results["smollm2_bbc"])
    if results["dylora_ranks"]:
        print("\nDyLoRA r=8, one run, read at each rank (`peftc eval --rank K`)\n")
        print("| rank | held-out accuracy | loss |\n|---|---|---|")
        for r in results["dylora_ranks"]:
            print(f"| {r['rank']} | {r['accuracy']:.4f} | {r['loss']:.4f} |")
    if results["coda_k"]:
        base = results["coda_k"][0]["eval_s"]
        print(f"\nCoDA on SmolLM2-135M + BBC News ({ss} steps, batch 4 x 128), one run per k: `peftc eval` over 64 held-out texts, best of 3, wall time incl. load\n")
        print("| method | eval wall time | speedup | held-out ppl | step |\n|---|---|---|---|---|")
        for r in results["coda_k"]:
            print(f"| {r['method']} | {r['eval_s']:.2f} s | {base / r['eval_s']:.2f}x | {r['perplexity']:.2f} | {r['step_s']:.2f} s |")
    if results["adapter_drop"]:
        base = results["adapter_drop"][0]["eval_s"]
        print("\nAdapterDrop at inference: adapter(bottleneck=256) after every attn and mlp, trained with adapter_drop = 3; `peftc eval --adapter-drop N` over the held-out set, best of 3, wall time incl. load\n")
        print("| dropped layers | wall time | speedup | accuracy |\n|---|---|---|---|")
        for r in results["adapter_drop"]:
            print(f"| {r['dropped_layers']} | {r['eval_s']:.2f} s | {base / r['eval_s']:.2f}x | {r['accuracy']:.4f} |")


if __name__ == "__main__":
    main()
