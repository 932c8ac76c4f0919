"""Side-by-side training benchmark: each workload trained by the Hugging Face stack and by
peftc, alternately (A B A B, after a warm-up), on the same threads, same batches, same
hyperparameters. Writes results.json and prints a table. Run through `benches/compare/run`."""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from workloads import CACHE, INFER_WORKLOADS, WORKLOADS, spec_text  # noqa: E402

THREADS = os.environ.get("BENCH_THREADS", "2")


def env():
    e = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        e[k] = THREADS
    e["BENCH_THREADS"] = THREADS
    return e


def run_json(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=HERE)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="*")
    a = ap.parse_args()
    peftc, bench = os.environ["PEFTC_BIN"], os.environ["PEFTC_COMPARE_BIN"]
    work = os.path.join(CACHE, "compare")
    os.makedirs(os.path.join(work, "specs"), exist_ok=True)
    subprocess.run([sys.executable, os.path.join(HERE, "prepare.py"), os.path.join(work, "batches")], check=True, env=env(), cwd=HERE)
    sgemm = run_json([sys.executable, os.path.join(HERE, "sgemm.py")])["sgemm_gflops"]
    print(f"2-thread sgemm (numpy/OpenBLAS): {sgemm:.1f} GFLOP/s", file=sys.stderr)
    results = []
    for name, w in WORKLOADS.items():
        if a.only and name not in a.only:
            continue
        batches = os.path.join(work, "batches", f"{name}.safetensors")
        spec = os.path.join(work, "specs", f"{name}.peft")
        with open(spec, "w") as f:
            f.write(spec_text(w, batches))
        est = json.loads(subprocess.run([peftc, "compile", spec, "--emit", "json"], capture_output=True, text=True, check=True).stdout)
        small = w["task"] == "causal_lm"
        warmup, steps = (1, 3) if a.quick and small else (2, 8) if a.quick else (2, 10) if small else (3, 20)
        cmds = [
            [sys.executable, os.path.join(HERE, "hf_step.py"), name, batches, str(warmup), str(steps)],
            [bench, spec, batches, str(warmup), str(steps)],
        ]
        if w.get("f32_base"):
            f32_spec = os.path.join(work, "specs", f"{name}.f32.peft")
            with open(f32_spec, "w") as f:
                f.write(spec_text(w, batches, base="f32"))
            cmds.append([bench, f32_spec, batches, str(warmup), str(steps)])
        h, p, *f32 = alternate(name, cmds)
        r = summarize(name, w, h, p, est["flops_per_step"], sgemm)
        r["estimated_bytes"] = est["memory_bytes"]["peak"]
        r["estimate_error"] = est["memory_bytes"]["peak"] / r["peftc_peak_rss_bytes"] - 1
        if h[0].get("heldout_loss") is not None:
            # After the same steps on the same batches: the last round's held-out loss.
            r["hf_heldout_loss"], r["peftc_heldout_loss"] = h[-1]["heldout_loss"], p[-1]["heldout_loss"]
            r["hf_heldout_ppl"], r["peftc_heldout_ppl"] = math.exp(r["hf_heldout_loss"]), math.exp(r["peftc_heldout_loss"])
        if f32:
            # The packed base against its f32 expansion, both peftc, same rounds.
            d = f32[0]
            d_t = statistics.median(t for o in d for t in o["step_times"])
            d_rss = max(o["peak_rss_bytes"] for o in d)
            r["f32_base_steps_per_s"] = 1 / d_t
            r["f32_base_peak_rss_bytes"] = d_rss
            r["packed_speed_ratio"] = r["peftc_steps_per_s"] * d_t
            r["packed_rss_ratio"] = r["peftc_peak_rss_bytes"] / d_rss
        results.append(r)
        print(json.dumps(r), file=sys.stderr)
    for name, w in INFER_WORKLOADS.items():
        if a.only and name not in a.only:
            continue
        results.append(infer_workload(name, w, a.quick, work, peftc, bench, sgemm))
    out = os.path.join(HERE, "results.json" if not a.only else "results.partial.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print("| workload | peftc steps/s | HF steps/s | speed | peftc RSS | HF RSS | RSS ratio | estimate vs RSS | roofline (peftc / HF) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['workload']} (B{r['batch']}×S{r['seq']}) | {r['peftc_steps_per_s']:.2f} | {r['hf_steps_per_s']:.2f} | "
            f"{r['speed_ratio']:.2f}× | {r['peftc_peak_rss_bytes'] / 2**20:.0f} MiB | {r['hf_peak_rss_bytes'] / 2**20:.0f} MiB | "
            f"{r['rss_ratio']:.2f} | {'n/a' if r['estimate_error'] is None else format(r['estimate_error'], '+.0%')} | {r['roofline_fraction']:.0%} / {r['hf_roofline_fraction']:.0%} |"
        )
    for r in results:
        if "peftc_heldout_ppl" in r:
            print(f"{r['workload']}: held-out perplexity after the same steps: peftc {r['peftc_heldout_ppl']:.3f}, HF {r['hf_heldout_ppl']:.3f}")
        if "packed_rss_ratio" in r:
            print(
                f"{r['workload']}: packed base against base = f32: {r['packed_speed_ratio']:.2f}× steps/s, "
                f"peak RSS {r['peftc_peak_rss_bytes'] / 2**20:.0f} MiB vs {r['f32_base_peak_rss_bytes'] / 2**20:.0f} MiB "
                f"({r['packed_rss_ratio']:.2f}×)"
            )
    print(f"\n2-thread sgemm limit: {sgemm:.0f} GFLOP/s; wrote {out}")


def alternate(name, cmds, rounds=3):
    """Runs the commands (HF first, then peftc's) one after another, `rounds`
    times; returns each command's JSON outputs in order."""
    outs = [[] for _ in cmds]
    for rep in range(rounds):
        print(f"{name}: round {rep + 1}/{rounds} ({len(cmds)} commands)", file=sys.stderr)
        for o, cmd in zip(outs, cmds):
            o.append(run_json(cmd))
    return outs


def summarize(name, w, hf, pf, flops, sgemm):
    """Median step time and peak RSS of each side over all rounds, their
    ratios, and each side's fraction of the sgemm limit for `flops` per step.
    The compiler's memory estimate is training's: workloads set it themselves."""
    hf_times = [t for o in hf for t in o["step_times"]]
    pf_times = [t for o in pf for t in o["step_times"]]
    hf_t, pf_t = statistics.median(hf_times), statistics.median(pf_times)
    hf_rss, pf_rss = max(o["peak_rss_bytes"] for o in hf), max(o["peak_rss_bytes"] for o in pf)
    return {
        "workload": name,
        "batch": w["batch"],
        "seq": w["seq"],
        "peftc_steps_per_s": 1 / pf_t,
        "hf_steps_per_s": 1 / hf_t,
        "speed_ratio": hf_t / pf_t,
        "peftc_peak_rss_bytes": pf_rss,
        "hf_peak_rss_bytes": hf_rss,
        "rss_ratio": pf_rss / hf_rss,
        "estimated_bytes": None,
        "estimate_error": None,
        "flops_per_step": flops,
        "sgemm_gflops": sgemm,
        "roofline_fraction": flops / pf_t / (sgemm * 1e9),
        "hf_roofline_fraction": flops / hf_t / (sgemm * 1e9),
        "steps_measured": len(pf_times),
    }


def infer_workload(name, w, quick, work, peftc, bench, sgemm):
    """Batches/s of scoring one mixed-adapter batch, both stacks alternately, and a
    check that both give the same logits."""
    batches = os.path.join(work, "batches", f"{w['batches']}.safetensors")
    spec = os.path.join(work, "specs", f"{name}.peft")
    with open(spec, "w") as f:
        f.write(spec_text(w, batches))
    adapters = os.path.join(work, "adapters", name)
    est = json.loads(subprocess.run([peftc, "compile", spec, "--emit", "json"], capture_output=True, text=True, check=True).stdout)
    n = str(w["adapters"])
    warmup, steps = ("1", "3") if quick else ("2", "8")
    h, p = alternate(
        name,
        [
            [sys.executable, os.path.join(HERE, "hf_multi_lora.py"), adapters, batches, n, warmup, steps],
            [bench, "--infer", spec, batches, n, warmup, steps, adapters],
        ],
    )
    r = summarize(name, w, h, p, est["flops"]["forward"], sgemm)
    r["adapters"] = w["adapters"]
    # Both stacks' logits at the checked positions, every round.
    r["logits_max_abs_diff"] = max(
        abs(x - y)
        for hr, pr in zip(h, p)
        for a, b in zip(hr["check"], pr["check"])
        for x, y in zip(a, b)
    )
    print(json.dumps(r), file=sys.stderr)
    return r


if __name__ == "__main__":
    main()
