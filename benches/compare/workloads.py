"""The workloads benches/compare runs on both stacks: model, method (as a peftc statement
and as a Hugging Face PEFT config), task, and batch shape. Same data, same seed, same
hyperparameters on both sides."""

import os

CACHE = os.environ.get("PEFTC_CACHE", os.path.expanduser("~/.cache/peftc"))
ASSETS = os.environ.get("PEFTC_ASSETS", os.path.join(CACHE, "assets"))
MINILM = os.path.join(ASSETS, "all-MiniLM-L6-v2")
SMOL = os.path.join(ASSETS, "SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")
QWEN2 = os.path.join(ASSETS, "Qwen2.5-Coder-0.5B-Instruct", "qwen2.5-coder-0.5b-instruct.gguf")
SMS = os.path.join(ASSETS, "sms", "spam_collection.csv")
BBC = os.path.join(ASSETS, "bbcnews")

MINILM_QV = r".*encoder\.layer\.\d+\.attention\.self\.(query|value)"

WORKLOADS = {
    "minilm_lora": dict(
        model=MINILM, task="classify", batch=16, seq=64,
        statement="lora(r=8, alpha=16, dropout=0.05) on layers[*].attn.{q, v}",
        hf=dict(kind="lora", r=8, lora_alpha=16, lora_dropout=0.05, target_modules=MINILM_QV),
    ),
    "minilm_dora": dict(
        model=MINILM, task="classify", batch=16, seq=64,
        statement="dora(r=8, alpha=16, dropout=0.05) on layers[*].attn.{q, v}",
        hf=dict(kind="lora", r=8, lora_alpha=16, lora_dropout=0.05, use_dora=True, target_modules=MINILM_QV),
    ),
    "minilm_ia3": dict(
        model=MINILM, task="classify", batch=16, seq=64,
        statement="ia3() on layers[*].attn.{k, v}, layers[*].mlp.down",
        hf=dict(
            kind="ia3",
            target_modules=r".*encoder\.layer\.\d+\.(attention\.self\.(key|value)|output\.dense)",
            feedforward_modules=r".*encoder\.layer\.\d+\.output\.dense",
        ),
    ),
    "minilm_prompt": dict(
        model=MINILM, task="classify", batch=16, seq=64,
        statement="prompt(len=20) on embed",
        hf=dict(kind="prompt", num_virtual_tokens=20),
    ),
    "smollm2_lora": dict(
        model=SMOL, task="causal_lm", batch=4, seq=128,
        statement="lora(r=8, alpha=16) on layers[*].attn.{q, v}",
        hf=dict(kind="lora", r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]),
        # A quantized GGUF: also timed with its weights expanded to f32 (`base = f32`),
        # beside the default packed base, in the same rounds.
        f32_base=True,
    ),
    # Qwen2.5-Coder-0.5B from its GGUF (Q5_0 / Q8_0 / Q4_K / Q6_K): peftc keeps it packed,
    # HF trains transformers' fp32 dequantized load of the same file.
    "qwen2_lora": dict(
        model=QWEN2, task="causal_lm", batch=4, seq=128,
        statement="lora(r=8, alpha=16) on layers[*].attn.{q, v}",
        hf=dict(kind="lora", r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]),
    ),
}

LR = 5e-4
SEED = 0


def spec_text(w, batch_file, base=None):
    """The .peft spec of a workload (data is the prepared batch file's source);
    `base` sets how a quantized base is held (`packed`, `f32`)."""
    labels = "    labels  = 2\n" if w["task"] == "classify" else ""
    if base:
        labels += f"    base    = {base}\n"
    return (
        f'model "{w["model"]}"\n'
        f'peft bench {{\n    {w["statement"]}\n}}\n'
        f"train {{\n    adapter = bench\n    task    = {w['task']}\n{labels}"
        f"    batch   = {w['batch']}\n    seq_len = {w['seq']}\n    lr      = {LR}\n    seed    = {SEED}\n}}\n"
    )

# Inference: SmolLM2 scoring one batch whose rows each use their own LoRA adapter
# (peftc's routed multi-adapter path against HF PEFT's `adapter_names=`). The batch is
# the first ROWS rows of smollm2_lora's prepared batches.
INFER_WORKLOADS = {
    "smollm2_multi_lora_infer": dict(
        model=SMOL, task="causal_lm", batch=8, seq=128, adapters=8, batches="smollm2_lora",
        statement="lora(r=8, alpha=16) on layers[*].attn.{q, v}",
    ),
}
