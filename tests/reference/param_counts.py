"""Golden parameter counts from Hugging Face transformers + PEFT.

For each case: build the HF model from a committed fixture config
(tests/fixtures/configs/<name>/config.json), wrap it with peft.get_peft_model and
record PeftModel.get_nb_trainable_parameters() (what print_trainable_parameters
prints). Big models are built on the meta device,
so no memory is used (torch.device("meta"); accelerate.init_empty_weights() would
untie tied embeddings); the two small real models are built for real (random init)
and also run one tiny forward pass, recorded as forward_ok / forward_error.

Run in the reference venv (scripts/setup-reference-venv):

    ~/.cache/peftc/venv/bin/python tests/reference/param_counts.py

Writes tests/fixtures/hf_param_counts.json. No network, no weights needed.
"""

import json
import os
import sys
import time
import traceback
import warnings
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.filterwarnings("ignore")

import peft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from peft import (  # noqa: E402
    AdaLoraConfig,
    IA3Config,
    LNTuningConfig,
    LoHaConfig,
    LoKrConfig,
    LoraConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    VeraConfig,
    get_peft_model,
)
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
)

transformers.logging.set_verbosity_error()

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "hf_param_counts.json"
SMALL = {"minilm-l6", "smollm2-135m"}  # built for real, forward-checked

# ---------------------------------------------------------------------------
# Role -> full-module-name regexes. HF PEFT re.fullmatch()es a string
# target_modules against each module's full name, so these pick exactly the
# intended modules (on BERT the bare suffix "output.dense" would also match
# "attention.output.dense").
# ---------------------------------------------------------------------------
BERT = {
    "qv": r".*encoder\.layer\.\d+\.attention\.self\.(query|value)",
    "all": r".*encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)",
    "ia3": r".*encoder\.layer\.\d+\.(attention\.self\.(key|value)|output\.dense)",
    "ia3_ff": r".*encoder\.layer\.\d+\.output\.dense",
    # list form (suffix match) for layers_to_transform, which PEFT only allows with a list
    "qv_list": ["query", "value"],
    "layers_pattern": "layer",
    "up": r".*encoder\.layer\.\d+\.(attention\.self\.(query|value)|intermediate\.dense)",
    "norms": ["LayerNorm"],
}
LLAMA = {
    "qv": r".*layers\.\d+\.self_attn\.(q_proj|v_proj)",
    "all": r".*layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))",
    "ia3": r".*layers\.\d+\.(self_attn\.(k_proj|v_proj)|mlp\.down_proj)",
    "ia3_ff": r".*layers\.\d+\.mlp\.down_proj",
    "qv_list": ["q_proj", "v_proj"],
    "layers_pattern": "layers",
    "up": r".*layers\.\d+\.(self_attn\.(q_proj|v_proj)|mlp\.up_proj)",
    "norms": ["input_layernorm", "post_attention_layernorm", "norm"],
}

S_QV = "lora(r=8, alpha=16) on layers[*].attn.{q, v}"
S_ALL_BERT = "lora(r=16, alpha=32) on layers[*].attn.{q, k, v, o}, layers[*].mlp.{up, down}"
S_ALL_LLAMA = "lora(r=16, alpha=32) on layers[*].attn.{q, k, v, o}, layers[*].mlp.{gate, up, down}"
S_DORA = "dora(r=8, alpha=16) on layers[*].attn.{q, v}"
S_IA3 = "ia3() on layers[*].attn.{k, v}, layers[*].mlp.down"
S_PROMPT = "prompt(len=20) on embed"
S_PREFIX = "prefix(len=10) on layers[*].attn"
S_PREFIX_PROJ = "prefix(len=10, projection=128) on layers[*].attn"
S_VERA = "vera(r=256) on layers[*].attn.{q, v}, layers[*].mlp.up"
S_LOHA = "loha(r=8, alpha=16) on layers[*].attn.{q, v}, layers[*].mlp.up"
S_LOKR = "lokr(r=8, alpha=16) on layers[*].attn.{q, v}, layers[*].mlp.up"
S_LOKR_BOTH = "lokr(r=4, alpha=8, decompose_both=true) on layers[*].attn.{q, v}, layers[*].mlp.up"
S_LN_BERT = 'ln() on "**.LayerNorm"'
S_LN_LLAMA = "ln() on layers[*].{attn_norm, mlp_norm}, final_norm"
S_PT_MLP = "ptuning(len=20) on embed"
S_PT_LSTM = "ptuning(len=10, encoder=lstm, hidden=64) on embed"
S_ADALORA = "adalora(init_r=12) on layers[*].attn.{q, v}, layers[*].mlp.up"
NEW = [(S_ADALORA, "adalora"), (S_VERA, "vera"), (S_LOHA, "loha"), (S_LOKR, "lokr"), (S_LOKR_BOTH, "lokr_both"),
       (S_PT_MLP, "ptuning_mlp"), (S_PT_LSTM, "ptuning_lstm")]


def method(kind, roles, **extra):
    """(peft config class, kwargs without task_type) for a method on a role table."""
    if kind == "qv":
        return LoraConfig, dict(r=8, lora_alpha=16, target_modules=roles["qv"])
    if kind == "all":
        return LoraConfig, dict(r=16, lora_alpha=32, target_modules=roles["all"])
    if kind == "dora":
        return LoraConfig, dict(r=8, lora_alpha=16, target_modules=roles["qv"], use_dora=True)
    if kind == "ia3":
        return IA3Config, dict(target_modules=roles["ia3"], feedforward_modules=roles["ia3_ff"])
    if kind == "prompt":
        return PromptTuningConfig, dict(num_virtual_tokens=20)
    if kind == "prefix":
        return PrefixTuningConfig, dict(num_virtual_tokens=10)
    if kind == "prefix_proj":
        return PrefixTuningConfig, dict(num_virtual_tokens=10, prefix_projection=True, encoder_hidden_size=128)
    if kind == "vera":
        return VeraConfig, dict(r=256, target_modules=roles["up"])
    if kind == "loha":
        return LoHaConfig, dict(r=8, alpha=16, target_modules=roles["up"])
    if kind == "lokr":
        return LoKrConfig, dict(r=8, alpha=16, target_modules=roles["up"])
    if kind == "lokr_both":
        return LoKrConfig, dict(r=4, alpha=8, decompose_both=True, target_modules=roles["up"])
    if kind == "ptuning_mlp":
        return PromptEncoderConfig, dict(num_virtual_tokens=20, encoder_hidden_size=128)
    if kind == "ptuning_lstm":
        return PromptEncoderConfig, dict(num_virtual_tokens=10, encoder_hidden_size=64,
                                         encoder_reparameterization_type="LSTM")
    if kind == "adalora":
        # ranknum is a frozen Parameter: counted in `all`, not in `trainable`.
        return AdaLoraConfig, dict(init_r=12, target_modules=roles["up"], total_step=100)
    if kind == "ln":
        return LNTuningConfig, dict(target_modules=roles["norms"])
    if kind == "qv_layers":
        return LoraConfig, dict(r=8, lora_alpha=16, target_modules=roles["qv_list"],
                                layers_to_transform=extra["layers"], layers_pattern=roles["layers_pattern"])
    raise ValueError(kind)


def cases():
    out = []

    def add(name, task, num_labels, statements, kind, roles, **extra):
        out.append(dict(name=name, task=task, num_labels=num_labels, statements=statements,
                        kind=kind, roles=roles, extra=extra))

    # MiniLM (BERT), sequence classification, 2 labels
    for stmt, kind in [(S_QV, "qv"), (S_ALL_BERT, "all"), (S_DORA, "dora"), (S_IA3, "ia3"),
                       (S_PROMPT, "prompt"), (S_PREFIX, "prefix"), (S_PREFIX_PROJ, "prefix_proj")]:
        add("minilm-l6", "classify", 2, stmt, kind, BERT)
    add("minilm-l6", "classify", 2, "lora(r=8, alpha=16) on layers[0..3].attn.{q, v}", "qv_layers", BERT,
        layers=[0, 1, 2])
    for stmt, kind in NEW + [(S_LN_BERT, "ln")]:
        add("minilm-l6", "classify", 2, stmt, kind, BERT)
    # MiniLM, feature extraction
    add("minilm-l6", "feature", None, S_QV, "qv", BERT)

    # SmolLM2 (LLaMA, GQA 9/3, tied), causal LM
    for stmt, kind in [(S_QV, "qv"), (S_ALL_LLAMA, "all"), (S_DORA, "dora"), (S_IA3, "ia3"),
                       (S_PROMPT, "prompt"), (S_PREFIX, "prefix"), (S_PREFIX_PROJ, "prefix_proj")]:
        add("smollm2-135m", "causal_lm", None, stmt, kind, LLAMA)
    add("smollm2-135m", "causal_lm", None, "lora(r=8, alpha=16) on layers[-2..].attn.{q, v}", "qv_layers", LLAMA,
        layers=[28, 29])
    for stmt, kind in NEW + [(S_LN_LLAMA, "ln")]:
        add("smollm2-135m", "causal_lm", None, stmt, kind, LLAMA)
    # SmolLM2, sequence classification, 3 labels
    add("smollm2-135m", "classify", 3, S_QV, "qv", LLAMA)

    # Big LLaMA-family configs on the meta device
    for name in ["llama2-7b", "llama2-13b", "llama2-70b", "mistral-7b", "qwen2-7b", "qwen2-0.5b"]:
        add(name, "causal_lm", None, S_ALL_LLAMA, "all", LLAMA)
        if name in ("llama2-7b", "qwen2-0.5b"):
            for stmt, kind in [(S_DORA, "dora"), (S_IA3, "ia3"), (S_PROMPT, "prompt"), (S_PREFIX, "prefix")] + NEW:
                add(name, "causal_lm", None, stmt, kind, LLAMA)
    return out


TASKS = {
    "classify": (AutoModelForSequenceClassification, "SEQ_CLS"),
    "causal_lm": (AutoModelForCausalLM, "CAUSAL_LM"),
    "feature": (AutoModel, "FEATURE_EXTRACTION"),
}


def build_base(name, task, num_labels):
    folder = REPO / "tests" / "fixtures" / "configs" / name
    kwargs = {"num_labels": num_labels} if num_labels is not None else {}
    cfg = AutoConfig.from_pretrained(str(folder), **kwargs)
    auto_cls, _ = TASKS[task]
    if name in SMALL:
        torch.manual_seed(0)
        # float32, as peftc trains (SmolLM2's config says bfloat16). The dtype shows in one
        # count: PEFT moves AdaLoRA's frozen `ranknum` to the base layer's dtype by
        # re-registering it, which makes it trainable (+1 per module) unless the dtypes match.
        model = auto_cls.from_config(cfg, dtype=torch.float32)
    else:
        # torch's meta device context, not accelerate.init_empty_weights(): the latter
        # re-wraps every registered Parameter, which silently unties tied embeddings
        # (Qwen2-0.5B would count its 136M-parameter embedding twice).
        with torch.device("meta"):
            model = auto_cls.from_config(cfg)
    return cfg, model


def count(model):
    seen, total = set(), 0
    for _, p in model.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def tiny_forward(peft_model, cfg, task):
    ids = torch.randint(5, min(cfg.vocab_size, 1000), (2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        if task == "classify":
            out = peft_model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1]))
            return list(out.logits.shape)
        if task == "causal_lm":
            out = peft_model(input_ids=ids, attention_mask=mask, labels=ids)
            return list(out.logits.shape)
        out = peft_model(input_ids=ids, attention_mask=mask)
        return list(out.last_hidden_state.shape)


def jsonable(v):
    if isinstance(v, (set, tuple)):
        return sorted(v) if isinstance(v, set) else list(v)
    return v


def run_case(c):
    name, task, num_labels = c["name"], c["task"], c["num_labels"]
    cls, kwargs = method(c["kind"], c["roles"], **c["extra"])
    _, task_type = TASKS[task]
    rec = {
        "name": name,
        "config": f"tests/fixtures/configs/{name}",
        "task": task,
        "num_labels": num_labels,
        "statements": c["statements"],
    }
    t0 = time.time()
    try:
        cfg, base = build_base(name, task, num_labels)
        rec["hf_class"] = type(base).__name__
        rec["hf_peft_class"] = cls.__name__
        rec["hf_peft_config"] = {"task_type": task_type, **{k: jsonable(v) for k, v in kwargs.items()}}
        rec["base_total"] = count(base)
        peft_cfg = cls(task_type=task_type, **kwargs)
        if name in SMALL:
            pm = get_peft_model(base, peft_cfg)
        else:
            with torch.device("meta"):
                pm = get_peft_model(base, peft_cfg)
        trainable, total = pm.get_nb_trainable_parameters()
        rec["trainable"] = int(trainable)
        rec["total"] = int(total)
        pc = pm.peft_config["default"]
        mts = getattr(pc, "modules_to_save", None)
        rec["modules_to_save"] = sorted(set(mts)) if mts else None
        targeted = list(getattr(pm, "targeted_module_names", None) or [])
        if targeted:
            rec["targeted_modules_count"] = len(targeted)
            if name in SMALL:
                rec["targeted_modules"] = targeted
        if pc.is_prompt_learning:
            rec["prompt_learning"] = {k: getattr(pc, k, None) for k in
                                      ["num_virtual_tokens", "token_dim", "num_transformer_submodules",
                                       "num_attention_heads", "num_layers", "encoder_hidden_size",
                                       "prefix_projection"] if hasattr(pc, k)}
        # trainable parameters grouped by kind, to see where the count comes from
        groups = {}
        for pname, p in pm.named_parameters():
            if not p.requires_grad:
                continue
            parts = pname.split(".")
            if "modules_to_save" in parts:
                key = "modules_to_save:" + parts[parts.index("modules_to_save") - 1]
            elif "prompt_encoder" in parts:
                key = "prompt_encoder:" + ".".join(parts[parts.index("prompt_encoder") + 2:])
            elif "default" in parts:  # lora_A / lora_B / lora_magnitude_vector / ia3_l
                key = parts[parts.index("default") - 1]
            else:
                key = pname
            groups[key] = groups.get(key, 0) + p.numel()
        rec["trainable_by_group"] = groups
        if name in SMALL:
            try:
                rec["forward_shape"] = tiny_forward(pm, cfg, task)
                rec["forward_ok"] = True
            except Exception as e:  # recorded, not fatal: counts stay valid
                rec["forward_ok"] = False
                rec["forward_error"] = f"{type(e).__name__}: {e}"[:500]
    except Exception as e:
        rec["error"] = f"{type(e).__name__}: {e}"[:1000]
        traceback.print_exc(file=sys.stderr)
    return rec, round(time.time() - t0, 2)


def main():
    results = []
    for c in cases():
        rec, seconds = run_case(c)
        results.append(rec)
        status = rec.get("error") or f"trainable={rec['trainable']:,} total={rec['total']:,}"
        fwd = "" if "forward_ok" not in rec else (" fwd ok" if rec["forward_ok"] else " FWD FAIL: " + rec["forward_error"][:120])
        print(f"{rec['name']:13s} {rec['task']:9s} {rec['statements'][:60]:60s} {status}{fwd} ({seconds}s)",
              flush=True)
    doc = {
        "peft_version": peft.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "accelerate_version": version("accelerate"),
        "generated_by": "tests/reference/param_counts.py",
        "notes": [
            "trainable/total are PeftModel.get_nb_trainable_parameters(): named_parameters() of the wrapped model, "
            "shared (tied) parameters counted once.",
            "For task classify PEFT adds the head (classifier/score) to modules_to_save: the trainable copy counts in "
            "trainable AND total, the frozen original counts in total too.",
            "base_total is the HF model's parameter count before wrapping.",
        ],
        "cases": results,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT} ({len(results)} cases, {sum('error' in r for r in results)} errors)")


if __name__ == "__main__":
    main()
