"""`peftc serve` under load on SmolLM2-135M (Q4_1 GGUF): 16 concurrent clients,
greedy completions spread over 1, 8 and 32 LoRA adapters (r=4 on q, v; the
Hugging Face PEFT fixture adapter, one copy per name), through the `openai`
Python client. Throughput (generated tokens per second over the run) and
p50 / p99 request latency per configuration, side by side in one run, each
against the single-adapter configuration under the same load. Before the load,
the client checks that a greedy completion equals Hugging Face's `generate`
(tests/fixtures/generate/greedy.json). Writes benches/serve/results.json.

    ~/.cache/peftc/venv/bin/python benches/serve/run.py [--clients 16] [--requests 48] [--tokens 32]

Needs the release binary (cargo build --release), scripts/fetch-assets and
`pip install openai` in the venv. Not yet here: llama.cpp's server on the same
GGUF (llama-cpp-python), the issue's second reference.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time

from openai import OpenAI

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PEFTC = os.environ.get("PEFTC_BIN", os.path.join(ROOT, "target", "release", "peftc"))
CACHE = os.environ.get("PEFTC_CACHE", os.path.expanduser("~/.cache/peftc"))
GGUF = os.path.join(CACHE, "assets", "SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")
ADAPTER = os.path.join(ROOT, "tests", "fixtures", "generate", "lora")
PROMPTS = [
    "The BBC reported on Tuesday that",
    "Gardening tips for the spring:",
    "def fibonacci(n):",
    "The history of the printing press",
    "Ten ways to save energy at home:",
    "In the first chapter of the novel,",
]


def spec(folder):
    with open(os.path.join(folder, "c.txt"), "w") as f:
        f.write("The markets rose as investors bought shares.\n" * 40)
    path = os.path.join(folder, "serve.peft")
    with open(path, "w") as f:
        f.write(
            f'model "{GGUF}"\npeft b {{\n    lora(r=4, alpha=8) on layers[*].attn.{{q, v}}\n}}\n'
            'train {\n    adapter = b\n    task = causal_lm\n    data = "c.txt"\n    seq_len = 64\n}\n'
        )
    return path


class Server:
    def __init__(self, spec_path, adapters, folder):
        args = [PEFTC, "serve", spec_path, "--port", "0", "--max-adapters", str(max(1, len(adapters)))]
        for name in adapters:
            d = os.path.join(folder, name)
            if not os.path.exists(d):
                shutil.copytree(ADAPTER, d)
            args += ["--adapter", f"{name}={d}"]
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
        self.url = None
        for line in self.proc.stderr:
            if "listening on " in line:
                self.url = line.split("listening on ")[1].strip()
                break
        if not self.url:
            raise SystemExit("peftc serve did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
        self.client = OpenAI(base_url=self.url + "/v1", api_key="none", max_retries=0, timeout=600)

    def stop(self):
        self.proc.terminate()
        return self.proc.wait(timeout=120)


def check(server):
    f = json.load(open(os.path.join(ROOT, "tests", "fixtures", "generate", "greedy.json")))
    case = f["cases"][0]
    r = server.client.completions.create(model="a0", prompt=case["prompt"],
                                         max_tokens=f["max_tokens"], temperature=0)
    assert r.choices[0].text == case["lora_text"], (r.choices[0].text, case["lora_text"])


def load(server, adapters, clients, requests, tokens):
    latencies, generated = [], []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.time()
            r = server.client.completions.create(
                model=adapters[i % len(adapters)], prompt=PROMPTS[i % len(PROMPTS)],
                max_tokens=tokens, temperature=0)
            dt = time.time() - t0
            with lock:
                latencies.append(dt)
                generated.append(r.usage.completion_tokens)

    t0 = time.time()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    return {
        "requests": len(latencies),
        "tokens": sum(generated),
        "seconds": wall,
        "tokens_per_second": sum(generated) / wall,
        "p50_seconds": statistics.median(latencies),
        "p99_seconds": p99,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--adapters", default="1,8,32")
    a = ap.parse_args()
    folder = tempfile.mkdtemp(prefix="peftc-serve-bench-")
    path = spec(folder)
    rows = []
    for n in [int(x) for x in a.adapters.split(",")]:
        names = [f"a{k}" for k in range(n)]
        server = Server(path, names, folder)
        try:
            check(server)
            load(server, names, min(4, a.clients), 4, 4)  # warm-up
            r = load(server, names, a.clients, a.requests, a.tokens)
        finally:
            server.stop()
        r["adapters"] = n
        rows.append(r)
        print(f"{n:>3} adapters: {r['tokens_per_second']:7.1f} tok/s  p50 {r['p50_seconds']:.2f} s  "
              f"p99 {r['p99_seconds']:.2f} s  ({r['requests']} requests, {r['tokens']} tokens, "
              f"{r['seconds']:.1f} s)", flush=True)
    one = rows[0]["tokens_per_second"]
    for r in rows:
        r["throughput_vs_first"] = r["tokens_per_second"] / one
    out = {"clients": a.clients, "requests": a.requests, "max_tokens": a.tokens,
           "cpu": cpu(), "threads": os.cpu_count(), "rows": rows}
    with open(os.path.join(ROOT, "benches", "serve", "results.json"), "w") as f:
        json.dump(out, f, indent=1)
    print("\n| adapters | tok/s | vs 1 adapter | p50 s | p99 s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['adapters']} | {r['tokens_per_second']:.1f} | {r['throughput_vs_first']:.2f}× | "
              f"{r['p50_seconds']:.2f} | {r['p99_seconds']:.2f} |")
    shutil.rmtree(folder, ignore_errors=True)


def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
