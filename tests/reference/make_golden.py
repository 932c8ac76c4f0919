"""Golden fixtures for peftc's runtime tests, produced by HF transformers + PEFT (fp32, CPU).

For every case below this writes tests/fixtures/golden/<case>/:

    case.json            what was run (model, task, peftc statements, HF PEFT config, texts,
                         token ids, logit positions, versions, notes)
    adapter/             exactly what PeftModel.save_pretrained writes (adapter_config.json +
                         adapter_model.safetensors; the boilerplate README.md model card is
                         deleted), after every trainable parameter was randomized (seeded), so
                         that no adapter is a no-op.  Base cases have no adapter/.
    io.safetensors       inputs, outputs, loss and grad.<adapter key> for every trainable
                         parameter (see tests/fixtures/golden/README.md)

Then it reloads every adapter with PeftModel.from_pretrained into a fresh base model, checks
that it reproduces the stored outputs (max abs diff < 1e-5) and prints a table.

    ~/.cache/peftc/venv/bin/python tests/reference/make_golden.py [case ...]

Needs scripts/fetch-assets (all-MiniLM-L6-v2 and the SmolLM2-135M-Instruct Q4_1 GGUF).
About 2-3 minutes on 2 CPU cores (the GGUF is dequantized once, then deep-copied per case).
"""

import copy
import json
import os
import shutil
import sys
import time
import traceback
import warnings
from importlib.metadata import version
from pathlib import Path

# PEFT writes set-valued fields (target_modules) as lists in set iteration order; a fixed hash
# seed keeps adapter_config.json byte-stable across runs.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable, *sys.argv])

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
import transformers  # noqa: E402
from peft import (  # noqa: E402
    AdaLoraConfig,
    IA3Config,
    LNTuningConfig,
    LoHaConfig,
    LoKrConfig,
    LoraConfig,
    PeftModel,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    VeraConfig,
    get_peft_model,
    get_peft_model_state_dict,
)
from safetensors.torch import load_file, save_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import (  # noqa: E402
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaForSequenceClassification,
)

transformers.logging.set_verbosity_error()
try:
    transformers.utils.logging.disable_progress_bar()
except Exception:  # noqa: BLE001
    pass

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "golden"
CACHE = Path(os.environ.get("PEFTC_CACHE", os.path.expanduser("~/.cache/peftc")))
MINILM = CACHE / "assets" / "all-MiniLM-L6-v2"
SMOL = CACHE / "assets" / "SmolLM2-135M-Instruct"
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

VERSIONS = {"torch": torch.__version__, "transformers": transformers.__version__,
            "peft": version("peft"), "safetensors": version("safetensors")}

MINILM_TEXTS = [
    "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005.",
    "Ok lar... Joking wif u oni...",
    "I'm gonna be home soon and i don't want to talk about this stuff anymore tonight",
]
MINILM_LABELS = [1, 0, 0]
SMOL_TEXTS = ["The capital of France is Paris. It is known for", "Rust is a systems programming language"]
SMOL_CLS_LABELS = [2, 0]
SMOL_PAD = 0
DIGITS_PROBE = "In 2024, 12345 apples cost $3.50."
VERIFY_TOL = 1e-5

# Role -> HF module-name regexes (PEFT re.fullmatch()es a string target_modules against the full
# module name).  On BERT the bare suffix "output.dense" would also match attention.output.dense.
BERT_QV = r".*encoder\.layer\.\d+\.attention\.self\.(query|value)"
BERT_ALL = (r".*encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense"
            r"|intermediate\.dense|output\.dense)")
BERT_IA3 = r".*encoder\.layer\.\d+\.(attention\.self\.(key|value)|output\.dense)"
BERT_IA3_FF = r".*encoder\.layer\.\d+\.output\.dense"
LLAMA_ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------
def case(name, model, task, statements, peft, num_labels=None, notes="", first_tol=None,
         prune=False, quantize=None):
    """`first_tol`: tolerance of SmolLM2's first-position logits when 2e-4 is below the
    float32 noise measured against float64 (tests/reference/f64_check.py). `prune`
    (AdaLoRA): give the config a rank_pattern that prunes triplets, as the rank allocator
    does, so save_pretrained writes only the kept ones (see `prune_adalora`). `quantize`
    ("nf4"): the base loaded by transformers with bitsandbytes in 4-bit NF4 with double
    quantization (QLoRA), peftc's `model "..." quantize nf4` (see `Bases.minilm`)."""
    return dict(name=name, model=model, task=task, statements=statements, peft=peft,
                num_labels=num_labels, notes=notes, first_tol=first_tol, prune=prune,
                quantize=quantize)


CASES = [
    case("minilm_feature_base", "minilm", "feature", "", None,
         notes="BertModel (AutoModel), no adapter. loss = sum(hidden * proj)."),
    case("minilm_cls_base", "minilm", "classify", "", None, num_labels=2,
         notes="BertForSequenceClassification, no adapter; the randomized classifier is stored "
               "in io.safetensors as classifier.weight / classifier.bias. loss = cross-entropy."),
    case("minilm_cls_lora", "minilm", "classify",
         "lora(r=8, alpha=16) on layers[*].attn.{q, v}",
         (LoraConfig, dict(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.0,
                           target_modules=BERT_QV)), num_labels=2),
    case("minilm_cls_qlora", "minilm", "classify",
         "lora(r=8, alpha=16) on layers[*].attn.{q, v}",
         (LoraConfig, dict(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.0,
                           target_modules=BERT_QV)), num_labels=2, quantize="nf4",
         notes="QLoRA: BertForSequenceClassification loaded with BitsAndBytesConfig(load_in_4bit, "
               "nf4, double quant, compute float32; classifier kept full precision); every other "
               "linear layer, the pooler's included, is a bitsandbytes Linear4bit. The block "
               "scales are re-coded with the nearest dynamic code (see nearest_double_quant)."),
    case("minilm_cls_lora_all", "minilm", "classify",
         "lora(r=4, alpha=8, rslora=true) on layers[*].attn.{q, k, v, o}, layers[*].mlp.{up, down}",
         (LoraConfig, dict(task_type="SEQ_CLS", r=4, lora_alpha=8, lora_dropout=0.0, use_rslora=True,
                           target_modules=BERT_ALL)), num_labels=2,
         notes="rsLoRA: scaling = alpha / sqrt(r) = 4."),
    case("minilm_cls_dora", "minilm", "classify",
         "dora(r=8, alpha=16) on layers[*].attn.{q, v}",
         (LoraConfig, dict(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.0, use_dora=True,
                           target_modules=BERT_QV)), num_labels=2),
    case("minilm_cls_ia3", "minilm", "classify",
         "ia3() on layers[*].attn.{k, v}, layers[*].mlp.down",
         (IA3Config, dict(task_type="SEQ_CLS", target_modules=BERT_IA3, feedforward_modules=BERT_IA3_FF)),
         num_labels=2,
         notes="IA3 on key/value (output scaling, ia3_l [out,1]) and the FFN output.dense only "
               "(feed-forward: input scaling, ia3_l [1,in]); attention.output.dense is NOT targeted."),
    case("minilm_cls_prompt", "minilm", "classify", "prompt(len=5) on embed",
         (PromptTuningConfig, dict(task_type="SEQ_CLS", num_virtual_tokens=5)), num_labels=2,
         notes="Virtual tokens are prepended to the word embeddings (token type 0, positions 0..4, "
               "real tokens at positions 5..); the pooler reads the FIRST VIRTUAL token, not [CLS]."),
    case("minilm_feature_prefix", "minilm", "feature", "prefix(len=5) on layers[*].attn",
         (PrefixTuningConfig, dict(task_type="FEATURE_EXTRACTION", num_virtual_tokens=5)),
         notes="BertModel + prefix tuning: per layer K/V prefixes of 5 virtual tokens; real tokens use "
               "positions 5.. (cache length); token_type_ids are dropped by PEFT (= zeros). hidden has no "
               "virtual positions."),
    case("smollm2_base", "smollm2", "causal_lm", "", None,
         notes="LlamaForCausalLM from the Q4_1 GGUF dequantized to fp32, no adapter."),
    case("smollm2_lora", "smollm2", "causal_lm",
         "lora(r=8, alpha=16) on layers[0, 14, 29].attn.{q, k, v, o}, layers[0, 14, 29].mlp.{gate, up, down}",
         (LoraConfig, dict(task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.0,
                           target_modules=LLAMA_ALL, layers_to_transform=[0, 14, 29],
                           layers_pattern="layers"))),
    case("smollm2_dora", "smollm2", "causal_lm", "dora(r=4, alpha=8) on layers[0, 29].attn.{q, v}",
         (LoraConfig, dict(task_type="CAUSAL_LM", r=4, lora_alpha=8, lora_dropout=0.0, use_dora=True,
                           target_modules=["q_proj", "v_proj"], layers_to_transform=[0, 29],
                           layers_pattern="layers"))),
    case("smollm2_ia3", "smollm2", "causal_lm", "ia3() on layers[*].attn.{k, v}, layers[*].mlp.down",
         (IA3Config, dict(task_type="CAUSAL_LM", target_modules=["k_proj", "v_proj", "down_proj"],
                          feedforward_modules=["down_proj"]))),
    case("smollm2_prompt", "smollm2", "causal_lm", "prompt(len=4) on embed",
         (PromptTuningConfig, dict(task_type="CAUSAL_LM", num_virtual_tokens=4)),
         notes="HF logits include the 4 virtual positions: logits_last/first were taken at "
               "4 + position; labels are prefixed with -100 by PEFT, so the loss covers the same "
               "real-token predictions plus the last virtual position predicting the first real token."),
    case("smollm2_prefix", "smollm2", "causal_lm", "prefix(len=4) on layers[*].attn",
         (PrefixTuningConfig, dict(task_type="CAUSAL_LM", num_virtual_tokens=4)),
         notes="GQA: PEFT overrides token_dim = head_dim * num_key_value_heads = 192 and "
               "num_attention_heads = 3. The prefix K is used as stored (no RoPE); real tokens use "
               "positions 4.. ."),
    case("smollm2_cls_lora", "smollm2", "classify", "lora(r=8, alpha=16) on layers[0..2].attn.{q, v}",
         (LoraConfig, dict(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.0,
                           target_modules=["q_proj", "v_proj"], layers_to_transform=[0, 1],
                           layers_pattern="layers")), num_labels=3,
         notes="LlamaForSequenceClassification built from the GGUF causal LM's config (num_labels=3, "
               "pad_token_id=0) with the backbone weights copied; score (no bias) is the "
               "modules_to_save head. Pooled at the last non-pad token (input_ids != 0). "
               "layers[0..2] is end-exclusive: layers 0 and 1."),
    # ---- the methods of the one-method-one-place issue (appended: earlier seeds unchanged)
    case("minilm_cls_vera", "minilm", "classify",
         "vera(r=16) on layers[*].attn.{q, v}, layers[*].mlp.up",
         (VeraConfig, dict(task_type="SEQ_CLS", r=16,
                           target_modules=r".*encoder\.layer\.\d+\.(attention\.self\.(query|value)|intermediate\.dense)")),
         num_labels=2,
         notes="Shared vera_A [16, 384] / vera_B [1536, 16] (the largest target, intermediate.dense "
               "1536x384), sliced per layer; saved as base_model.vera_A / base_model.vera_B."),
    case("smollm2_vera", "smollm2", "causal_lm", "vera(r=8, d_initial=0.2) on layers[0, 29].attn.{q, v}",
         (VeraConfig, dict(task_type="CAUSAL_LM", r=8, d_initial=0.2, target_modules=["q_proj", "v_proj"],
                           layers_to_transform=[0, 29], layers_pattern="layers")),
         notes="q 576x576 and v 192x576 share vera_B [576, 8], sliced to 192 rows for v."),
    case("minilm_cls_loha", "minilm", "classify", "loha(r=4, alpha=8) on layers[*].attn.{q, v}",
         (LoHaConfig, dict(task_type="SEQ_CLS", r=4, alpha=8, target_modules=BERT_QV)), num_labels=2),
    case("smollm2_loha", "smollm2", "causal_lm", "loha(r=2, alpha=4) on layers[0, 29].mlp.{up, down}",
         (LoHaConfig, dict(task_type="CAUSAL_LM", r=2, alpha=4, target_modules=["up_proj", "down_proj"],
                           layers_to_transform=[0, 29], layers_pattern="layers"))),
    case("minilm_cls_lokr", "minilm", "classify",
         "lokr(r=4, alpha=8, decompose_both=true) on layers[*].attn.{q, v}, layers[*].mlp.up",
         (LoKrConfig, dict(task_type="SEQ_CLS", r=4, alpha=8, decompose_both=True,
                           target_modules=r".*encoder\.layer\.\d+\.(attention\.self\.(query|value)|intermediate\.dense)")),
         num_labels=2,
         notes="384x384: (16,24)x(16,24), w1 factored (decompose_both, 4 < 8), w2 factored; "
               "1536x384: (32,48)x(16,24), w1 (32,16) factored (4 < 16), w2 factored."),
    case("smollm2_lokr", "smollm2", "causal_lm", "lokr(r=16, alpha=8) on layers[0, 29].attn.{q, k}",
         (LoKrConfig, dict(task_type="CAUSAL_LM", r=16, alpha=8, target_modules=["q_proj", "k_proj"],
                           layers_to_transform=[0, 29], layers_pattern="layers")),
         notes="r=16: q 576x576 (24,24)x(24,24) and k 192x576 (12,16)x(24,24) both keep w1 and w2 whole."),
    case("minilm_cls_ln", "minilm", "classify", 'ln() on "**.LayerNorm"',
         (LNTuningConfig, dict(task_type="SEQ_CLS", target_modules=["LayerNorm"])), num_labels=2,
         notes="Every LayerNorm (embeddings' too) trains a copy of its weight and bias."),
    case("smollm2_ln", "smollm2", "causal_lm", "ln() on layers[*].{attn_norm, mlp_norm}, final_norm",
         (LNTuningConfig, dict(task_type="CAUSAL_LM")),
         notes="HF's LLaMA default targets: input_layernorm, post_attention_layernorm, norm. "
               "The tuned norms amplify the first position's massive activations: against HF in "
               "float64, HF float32 is off by 1.65e-4 and peftc by 1.16e-4, so the two float32 "
               "results differ by 2.36e-4; first_tol 3e-4.",
         first_tol=3e-4),
]

CASES += [
    case("minilm_cls_ptuning", "minilm", "classify", "ptuning(len=5, encoder=mlp, hidden=64) on embed",
         (PromptEncoderConfig, dict(task_type="SEQ_CLS", num_virtual_tokens=5,
                                    encoder_reparameterization_type="MLP", encoder_hidden_size=64)),
         num_labels=2,
         notes="HF saves only the encoder's output (prompt_embeddings); the encoder's own values and "
               "gradients are in io.safetensors as encoder.<peftc name> / grad.<peftc name>."),
    case("smollm2_ptuning", "smollm2", "causal_lm", "ptuning(len=4, encoder=lstm, hidden=32) on embed",
         (PromptEncoderConfig, dict(task_type="CAUSAL_LM", num_virtual_tokens=4,
                                    encoder_reparameterization_type="LSTM", encoder_hidden_size=32)),
         notes="Two-layer bidirectional LSTM encoder and a Linear(64,64)-ReLU-Linear(64,576) head; "
               "HF logits include the 4 virtual positions."),
]

CASES += [
    case("minilm_cls_adalora", "minilm", "classify", "adalora(init_r=6, target_r=4, alpha=16) on layers[*].attn.{q, v}",
         (AdaLoraConfig, dict(task_type="SEQ_CLS", init_r=6, target_r=4, lora_alpha=16,
                              target_modules=BERT_QV, total_step=100)),
         num_labels=2,
         notes="The loss includes HF's orthogonality regularizer (0.5 x mean of ||AA^T - I||_F and "
               "||B^T B - I||_F), added by AdaLoraModel.forward whenever labels are given."),
    case("smollm2_adalora", "smollm2", "causal_lm",
         "adalora(init_r=4, target_r=2, alpha=8, orth_reg_weight=0.3) on layers[0, 29].mlp.{gate, down}",
         (AdaLoraConfig, dict(task_type="CAUSAL_LM", init_r=4, target_r=2, lora_alpha=8, orth_reg_weight=0.3,
                              target_modules=["gate_proj", "down_proj"], layers_to_transform=[0, 29],
                              layers_pattern="layers", total_step=100))),
    case("minilm_cls_adalora_pruned", "minilm", "classify",
         "adalora(init_r=6, target_r=4, alpha=16) on layers[0, 5].attn.{q, v}",
         (AdaLoraConfig, dict(task_type="SEQ_CLS", init_r=6, target_r=4, lora_alpha=16,
                              target_modules=r".*encoder\.layer\.(0|5)\.attention\.self\.(query|value)",
                              total_step=100)),
         num_labels=2, prune=True,
         notes="rank_pattern prunes 1-3 triplets per module (E zeroed, and the pruned rows of A and "
               "columns of B zeroed, as a pruned adapter file restores them); adapter/ holds only the "
               "kept triplets, grad.* the full init_r tensors."),
]

# Buffers some adapters save beside their parameters (frozen: no gradient).
SAVED_BUFFERS = {"base_model.vera_A", "base_model.vera_B"}


def dump_json(obj, indent=0):
    """json.dumps(indent=2), but lists of scalars stay on one line (token ids, shapes)."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {dump_json(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in obj):
            return json.dumps(list(obj))
        return "[\n" + ",\n".join(inner + dump_json(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj)



def write_native_case(d, c, inp, seed, io, params, outs, loss, notes, tols=None):
    """A native case (a method with no HF PEFT form, its reference written on transformers' own
    layers): io.safetensors with the inputs in `io`, every parameter, its gradient, the outputs
    and the loss;
    case.json with what tests/golden.rs checks (`native: true`). `tols` (e.g. `grad_tol`,
    `logits_last_tol`) are per-case tolerances, each explained where the caller sets it."""
    io = dict(io)
    for k, p in params.items():
        assert p.grad is not None and p.grad.abs().max() > 0, f"no gradient for {k}"
        io[f"param.{k}"] = p.detach().clone().contiguous()
        io[f"grad.{k}"] = p.grad.detach().clone().contiguous()
    for k, v in outs.items():
        io[k] = v.detach().float().contiguous()
    io["loss"] = loss.detach().float().reshape(1)
    save_file({k: v.contiguous() for k, v in io.items()}, str(d / "io.safetensors"))
    minilm = c["model"] == "minilm"
    meta = dict(name=c["name"], model=c["model"], task=c["task"], num_labels=c["num_labels"],
                statements=c["statements"], native=True, hf_peft_config={},
                texts=MINILM_TEXTS if minilm else SMOL_TEXTS, token_ids=inp["rows"],
                n_virtual_tokens=0, seed=seed, notes=notes, versions=VERSIONS)
    meta.update(tols or {})
    if not minilm:
        last = (inp["attention_mask"].sum(1) - 1).tolist()
        meta["logits_positions"] = {"last": last, "first": [0] * len(last),
                                    "comment": "indices into HF's logits sequence axis"}
    meta["trainable_params"] = sum(p.numel() for p in params.values())
    meta["grad_keys"] = sorted(params)
    meta["io_shapes"] = {k: list(v.shape) for k, v in io.items()
                         if not k.startswith("grad.") and not k.startswith("param.")}
    (d / "case.json").write_text(dump_json(meta) + "\n")
    return meta

# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
def pad_right(rows, pad_id):
    s = max(len(r) for r in rows)
    ids = torch.full((len(rows), s), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(rows), s), dtype=torch.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
        mask[i, : len(r)] = 1
    return ids, mask


def minilm_inputs():
    tk = Tokenizer.from_file(str(MINILM / "tokenizer.json"))
    tk.no_padding()  # tokenizer.json ships padding to a fixed length of 128
    tk.no_truncation()
    rows = [e.ids for e in tk.encode_batch(MINILM_TEXTS)]
    ids, mask = pad_right(rows, 0)
    ref = AutoTokenizer.from_pretrained(str(MINILM))(MINILM_TEXTS, padding=True, return_tensors="pt")
    assert torch.equal(ref["input_ids"], ids) and torch.equal(ref["attention_mask"], mask)
    return dict(rows=rows, input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))


def smol_inputs(tok):
    rows = [tok(t)["input_ids"] for t in SMOL_TEXTS]
    ids, mask = pad_right(rows, SMOL_PAD)
    return dict(rows=rows, input_ids=ids, attention_mask=mask)


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------
class Bases:
    """Loads base models; the GGUF is dequantized once and deep-copied per use."""

    def __init__(self):
        self._smol = None

    def smol_causal(self):
        if self._smol is None:
            t = time.time()
            m = AutoModelForCausalLM.from_pretrained(str(SMOL), gguf_file=SMOL_GGUF, dtype=torch.float32)
            m.name_or_path = "SmolLM2-135M-Instruct"  # keep local paths out of adapter_config.json
            m.eval()
            self._smol = m
            print(f"  [GGUF dequantized to fp32 in {time.time() - t:.1f}s]", flush=True)
        return copy.deepcopy(self._smol)

    def smol_cls(self, num_labels, seed):
        src = self.smol_causal()
        cfg = copy.deepcopy(src.config)
        cfg.num_labels = num_labels
        cfg.pad_token_id = SMOL_PAD
        cfg.architectures = ["LlamaForSequenceClassification"]
        torch.manual_seed(seed)
        m = LlamaForSequenceClassification(cfg).to(torch.float32)
        missing, unexpected = m.load_state_dict(
            {k: v for k, v in src.state_dict().items() if k.startswith("model.")}, strict=False)
        assert missing == ["score.weight"] and not unexpected, (missing, unexpected)
        m.name_or_path = "SmolLM2-135M-Instruct"
        return m.eval()

    def minilm(self, task, num_labels=None, quantize=None):
        q = {}
        if quantize == "nf4":
            from transformers import BitsAndBytesConfig
            q = dict(quantization_config=BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.float32, llm_int8_skip_modules=["classifier"]),
                device_map="cpu")
        if task == "feature":
            m = AutoModel.from_pretrained(str(MINILM), dtype=torch.float32, **q)
        else:
            m = AutoModelForSequenceClassification.from_pretrained(str(MINILM), num_labels=num_labels,
                                                                   dtype=torch.float32, **q)
        if quantize:
            nearest_double_quant(m, prefix="" if task == "feature" else "bert.")
        m.name_or_path = "all-MiniLM-L6-v2"
        return m.eval()

    def get(self, c, seed):
        if c["model"] == "minilm":
            return self.minilm(c["task"], c["num_labels"], c.get("quantize"))
        if c["task"] == "classify":
            return self.smol_cls(c["num_labels"], seed)
        return self.smol_causal()


def nearest_double_quant(model, prefix):
    """Re-codes every bitsandbytes Linear4bit's block scales with the nearest dynamic code, from
    the checkpoint's own f32 weight (`nf4_nearest.recode_nearest`, which says why).

    Also keeps every Linear4bit on bitsandbytes' float32 path (dequantize, then matmul): on a CPU
    with AVX512-BF16, a Linear4bit in eval() mode under no_grad otherwise repacks its weight on
    first use for a kernel that computes in bfloat16 (measured: 3.9e-4 off in the logits), which
    would make the reference depend on the machine and on autograd being on."""
    import bitsandbytes as bnb
    from nf4_nearest import recode_nearest
    dense = load_file(str(MINILM / "model.safetensors"))
    for name, m in model.named_modules():
        if not isinstance(m, bnb.nn.Linear4bit):
            continue
        m.support_avx512bf16_for_cpu = False
        key = name.removeprefix(prefix) + ".weight"
        recode_nearest(dense.get(key, dense.get("bert." + key)).float(), m.weight.quant_state)


# ---------------------------------------------------------------------------------------------
# Adapter randomization and key mapping
# ---------------------------------------------------------------------------------------------
def randomize_trainable(model, gen, prompt_std):
    """Seeded: LoRA A/B N*0.05, DoRA m = m0*(1+0.05N), IA3 1+0.1N, prompt/prefix N*prompt_std,
    modules_to_save heads N*0.05 (weight and bias)."""
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if not p.requires_grad:
                continue
            n = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "lora_E" in name:
                p.copy_(0.5 * n)
            elif "lora_magnitude_vector" in name:
                p.mul_(1 + 0.05 * n)
            elif "lora_A" in name or "lora_B" in name:
                p.copy_(0.05 * n)
            elif "ia3_l" in name:
                p.copy_(1 + 0.1 * n)
            elif "prompt_encoder" in name:
                p.copy_(prompt_std * n)
            elif "modules_to_save" in name:
                p.copy_(0.05 * n)
            elif "vera_lambda_b" in name:
                p.copy_(0.5 * n)
            elif "vera_lambda_d" in name:
                p.add_(0.05 * n)
            elif "hada_" in name:
                p.copy_(0.3 * n)
            elif "lokr_" in name:
                p.copy_(0.3 * n)
            elif "ln_tuning_layers" in name:
                p.add_(0.05 * n)
            else:
                raise ValueError(f"don't know how to randomize trainable {name}")


def prune_adalora(model, gen):
    """A rank_pattern as HF's RankAllocator writes it (keys: the parameter's name under the
    transformers model, adapter name included; values: init_r bools, True = kept), with E zeroed
    where pruned (`mask_to_budget`) and A's rows and B's columns there zeroed too."""
    pattern = {}
    with torch.no_grad():
        for name, mod in sorted(model.base_model.model.named_modules()):
            if not hasattr(mod, "lora_E") or "default" not in getattr(mod, "lora_E", {}):
                continue
            r = mod.lora_E["default"].shape[0]
            k = 1 + int(torch.randint(0, 3, (1,), generator=gen))
            pruned = torch.randperm(r, generator=gen)[:k]
            keep = torch.ones(r, dtype=torch.bool)
            keep[pruned] = False
            mod.lora_E["default"][~keep] = 0.0
            mod.lora_A["default"][~keep] = 0.0
            mod.lora_B["default"][:, ~keep] = 0.0
            pattern[f"{name}.lora_E.default"] = keep.tolist()
    model.peft_config["default"].rank_pattern = pattern


def by_adapter_key(model, per_param):
    """Re-key {param name: tensor} by the adapter-file keys: load the tensors into the trainable
    parameters, run get_peft_model_state_dict (the function save_pretrained uses), restore."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(per_param) == set(params), set(per_param) ^ set(params)
    saved = {n: p.detach().clone() for n, p in params.items()}
    # AdaLoRA: the full init_r tensors, not the kept triplets save_pretrained writes.
    cfg = model.peft_config["default"]
    pattern = getattr(cfg, "rank_pattern", None)
    if pattern is not None and isinstance(cfg, AdaLoraConfig):
        cfg.rank_pattern = None
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(per_param[n])
        out = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(model).items()
               if k not in SAVED_BUFFERS}
        for n, p in params.items():
            p.copy_(saved[n])
    if pattern is not None and isinstance(cfg, AdaLoraConfig):
        cfg.rank_pattern = pattern
    assert len(out) == len(params), (sorted(out), sorted(params))
    return out


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------
def forward(model, c, inp, n_virtual, proj=None, labels=None):
    """Returns (outputs dict of f32 tensors, loss tensor)."""
    kw = dict(input_ids=inp["input_ids"], attention_mask=inp["attention_mask"])
    if c["model"] == "minilm":
        kw["token_type_ids"] = inp["token_type_ids"]
    if c["task"] == "feature":
        hidden = model(**kw).last_hidden_state
        return {"hidden": hidden}, (hidden * proj).sum()
    out = model(**kw, labels=labels)
    if c["task"] == "classify":
        return {"logits": out.logits}, out.loss
    logits = out.logits  # [B, n_virtual + S, V] for prompt tuning, else [B, S, V]
    rows = torch.arange(logits.shape[0])
    last = inp["attention_mask"].sum(1) - 1
    return {"logits_last": logits[rows, n_virtual + last],
            "logits_first": logits[rows, torch.full_like(last, n_virtual)]}, out.loss


def n_virtual_of(c):
    if c["peft"] and c["peft"][0] in (PromptTuningConfig, PromptEncoderConfig):
        return c["peft"][1]["num_virtual_tokens"]
    return 0


def labels_for(c, inp):
    if c["task"] == "classify":
        return torch.tensor(MINILM_LABELS if c["model"] == "minilm" else SMOL_CLS_LABELS, dtype=torch.int64)
    if c["task"] == "causal_lm":
        lab = inp["input_ids"].clone()
        lab[inp["attention_mask"] == 0] = -100
        return lab
    return None


# ---------------------------------------------------------------------------------------------
# One case
# ---------------------------------------------------------------------------------------------
def run_case(idx, c, bases, inputs, extra_meta):
    seed = 1000 + idx
    d = OUT / c["name"]
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    inp = inputs[c["model"]]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    base = bases.get(c, seed)
    io = {k: inp[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in inp}
    labels = labels_for(c, inp)
    if labels is not None:
        io["labels"] = labels
    proj = None
    if c["task"] == "feature":
        # hidden shape: [B, S(+n_virtual for prompt tuning), H]; no feature prompt case here
        proj = torch.randn((*inp["input_ids"].shape, base.config.hidden_size), generator=gen)
        io["proj"] = proj
    n_virtual = n_virtual_of(c)

    meta = dict(name=c["name"], model=c["model"], task=c["task"], num_labels=c["num_labels"],
                statements=c["statements"], hf_peft_config={}, texts=MINILM_TEXTS if c["model"] == "minilm"
                else SMOL_TEXTS, token_ids=inp["rows"], n_virtual_tokens=n_virtual, seed=seed,
                notes=c["notes"], versions=VERSIONS)
    if c["first_tol"] is not None:
        meta["logits_first_tol"] = c["first_tol"]
    if c["quantize"] is not None:
        import bitsandbytes as bnb
        meta["quantize"] = c["quantize"]
        meta["versions"] = dict(VERSIONS, bitsandbytes=bnb.__version__)
    if c["task"] == "causal_lm":
        last = (inp["attention_mask"].sum(1) - 1).tolist()
        meta["logits_positions"] = {"last": [n_virtual + i for i in last], "first": [n_virtual] * len(last),
                                    "comment": "indices into HF's logits sequence axis"}
    meta.update(extra_meta.get(c["name"], {}))

    if c["peft"] is None:  # base case: no adapter, no grads
        if c["task"] == "classify":
            cls = base.classifier if c["model"] == "minilm" else base.score
            with torch.no_grad():
                for pname, p in sorted(cls.named_parameters()):
                    p.copy_(0.05 * torch.randn(p.shape, generator=gen))
                    io[f"classifier.{pname}"] = p.detach().clone()
        with torch.no_grad():
            outs, loss = forward(base, c, inp, 0, proj, labels)
        grads = {}
        n_trainable = 0
    else:
        cfg_cls, kwargs = c["peft"]
        model = get_peft_model(base, cfg_cls(**kwargs))
        model.eval()  # dropout off, autograd on
        prompt_std = 0.1 if cfg_cls is PrefixTuningConfig else 0.5
        randomize_trainable(model, gen, prompt_std)
        if c["prune"]:
            prune_adalora(model, gen)
        outs, loss = forward(model, c, inp, n_virtual, proj, labels)
        loss.backward()
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        missing = [n for n, p in params.items() if p.grad is None]
        assert not missing, f"no grad for {missing}"
        n_trainable = sum(p.numel() for p in params.values())
        if cfg_cls is PromptEncoderConfig:
            # HF saves the encoder's output only: keep the encoder's values and
            # gradients under peftc's names, the head's under its adapter keys.
            def key(n):
                return (n.replace("prompt_encoder.default.", "prompt_encoder.")
                        .replace(".modules_to_save.default.", "."))
            grads = {key(n): p.grad.detach().clone() for n, p in params.items()}
            for n, p in params.items():
                if "prompt_encoder" in n:
                    io[f"encoder.{key(n)}"] = p.detach().clone().contiguous()
        else:
            grads = by_adapter_key(model, {n: p.grad for n, p in params.items()})
        zero = [k for k, g in grads.items() if not g.abs().max() > 0]
        assert not zero, f"all-zero gradients for {zero}"
        model.save_pretrained(str(d / "adapter"))
        readme = d / "adapter" / "README.md"
        if readme.exists():
            readme.unlink()
        saved = {k: v for k, v in load_file(str(d / "adapter" / "adapter_model.safetensors")).items()
                 if k not in SAVED_BUFFERS and not (cfg_cls is PromptEncoderConfig and k == "prompt_embeddings")}
        if cfg_cls is PromptEncoderConfig:
            grads_cmp = {k: g for k, g in grads.items() if not k.startswith("prompt_encoder.")}
        else:
            grads_cmp = grads
        assert set(saved) == set(grads_cmp), set(saved) ^ set(grads_cmp)
        for k in saved:
            if not c["prune"]:  # pruned: the file holds the kept triplets, grads the full tensors
                assert saved[k].shape == grads_cmp[k].shape, (k, saved[k].shape, grads_cmp[k].shape)
        meta["hf_peft_config"] = json.loads((d / "adapter" / "adapter_config.json").read_text())

    for k, v in outs.items():
        io[k] = v.detach().float().contiguous()
    io["loss"] = loss.detach().float().reshape(1)
    for k, g in grads.items():
        io[f"grad.{k}"] = g.float()
    save_file({k: v.contiguous() for k, v in io.items()}, str(d / "io.safetensors"))
    meta["trainable_params"] = n_trainable
    meta["grad_keys"] = sorted(grads)
    meta["io_shapes"] = {k: list(v.shape) for k, v in io.items() if not k.startswith("grad.")}
    (d / "case.json").write_text(dump_json(meta) + "\n")
    return dict(loss=float(loss), n_trainable=n_trainable, n_grads=len(grads),
                out_shapes={k: list(v.shape) for k, v in outs.items()})


# ---------------------------------------------------------------------------------------------
# Verification: reload from disk into a fresh base
# ---------------------------------------------------------------------------------------------
def verify_case(idx, c, bases, inputs):
    d = OUT / c["name"]
    io = load_file(str(d / "io.safetensors"))
    inp = dict(inputs[c["model"]])
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        if k in io:
            assert torch.equal(io[k], inp[k]), k
    base = bases.get(c, 424242 + idx)  # a different seed: the adapter file must supply the head
    if c["peft"] is None:
        model = base
        if c["task"] == "classify":
            cls = base.classifier if c["model"] == "minilm" else base.score
            with torch.no_grad():
                for pname, p in cls.named_parameters():
                    p.copy_(io[f"classifier.{pname}"])
    else:
        model = PeftModel.from_pretrained(base, str(d / "adapter"))
    model.eval()
    # A loaded AdaLoRA model cannot take labels (its regularizer needs the trainable adapter's
    # name, unset in inference mode): compare its outputs only.
    adalora = c["peft"] is not None and c["peft"][0] is AdaLoraConfig
    labels = None if adalora else io.get("labels")
    with torch.no_grad():
        outs, loss = forward(model, c, inp, n_virtual_of(c), io.get("proj"), labels)
    diffs = {k: (v - io[k]).abs().max().item() for k, v in outs.items()}
    if loss is not None:
        diffs["loss"] = abs(loss.item() - io["loss"].item())
    effect = None  # how far the adapter moves the outputs (adapters disabled; heads: the fresh random one)
    if c["peft"] is not None:
        with torch.no_grad():
            if model.active_peft_config.is_prompt_learning:
                # PEFT 0.21.2 disable_adapter() raises on a prompt-learning BERT seq-cls model
                # (UnboundLocalError on prepare_inputs_for_generation); the base is untouched anyway
                outs0, _ = forward(model.get_base_model(), c, inp, 0, io.get("proj"), labels)
            else:
                with model.disable_adapter():
                    outs0, _ = forward(model, c, inp, 0, io.get("proj"), labels)
        effect = max((outs0[k] - io[k]).abs().max().item() for k in outs0)
    return diffs, effect


# ---------------------------------------------------------------------------------------------
def main(argv):
    wanted = set(argv)
    cases = [(i, c) for i, c in enumerate(CASES) if not wanted or c["name"] in wanted]
    t0 = time.time()
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    bases = Bases()
    inputs = {"minilm": minilm_inputs()}
    extra_meta = {}
    if any(c["model"] == "smollm2" for _, c in cases):
        tok = AutoTokenizer.from_pretrained(str(SMOL), gguf_file=SMOL_GGUF)
        inputs["smollm2"] = smol_inputs(tok)
        probe = tok(DIGITS_PROBE)["input_ids"]
        extra_meta["smollm2_base"] = {
            "digits_probe": DIGITS_PROBE, "digits_probe_ids": probe,
            "digits_probe_tokens": tok.convert_ids_to_tokens(probe),
            "tokenizer": f"{type(tok).__name__} built by transformers from the GGUF "
                         f"(AutoTokenizer.from_pretrained(folder, gguf_file=...)); no BOS added; "
                         f"pad id {SMOL_PAD} ({tok.convert_ids_to_tokens([SMOL_PAD])[0]}) appended on the right"}
    extra_meta["minilm_feature_prefix"] = {"bert_seq_cls_prefix_probe": probe_bert_seqcls_prefix(bases, inputs)} \
        if any(c["name"] == "minilm_feature_prefix" for _, c in cases) else {}

    results, failures = {}, {}
    for i, c in cases:
        t = time.time()
        print(f"[{i + 1:2d}] {c['name']} ...", flush=True)
        try:
            results[c["name"]] = run_case(i, c, bases, inputs, extra_meta)
            results[c["name"]]["time"] = time.time() - t
        except Exception as e:  # noqa: BLE001  record, keep going
            traceback.print_exc()
            failures[c["name"]] = f"{type(e).__name__}: {e}"
            d = OUT / c["name"]
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            (d / "case.json").write_text(dump_json(dict(
                name=c["name"], model=c["model"], task=c["task"], num_labels=c["num_labels"],
                statements=c["statements"], failed=True, error=failures[c["name"]], notes=c["notes"],
                versions=VERSIONS)) + "\n")

    print("\nverifying: PeftModel.from_pretrained(fresh base, adapter/) reproduces io.safetensors", flush=True)
    bad = []
    hdr = f"{'case':24} {'outputs':44} {'trainable':>9} {'grads':>5} {'loss':>9} {'max|diff|':>10} {'effect':>8}"
    rows = []
    for i, c in cases:
        if c["name"] in failures:
            rows.append(f"{c['name']:24} FAILED: {failures[c['name']][:90]}")
            continue
        diffs, effect = verify_case(i, c, bases, inputs)
        worst = max(diffs.values())
        if worst >= VERIFY_TOL:
            bad.append((c["name"], diffs))
        r = results[c["name"]]
        shapes = " ".join(f"{k}{r['out_shapes'][k]}" for k in r["out_shapes"])
        rows.append(f"{c['name']:24} {shapes:44} {r['n_trainable']:9d} {r['n_grads']:5d} {r['loss']:9.5f} "
                    f"{worst:10.2e} {'-' if effect is None else f'{effect:8.3f}':>8}")
    print(hdr)
    print("\n".join(rows))
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"\ntotal size of {OUT.relative_to(REPO)}: {total / 1e6:.2f} MB; {time.time() - t0:.0f}s")
    if failures:
        print("failed cases:", json.dumps(failures, indent=2))
    if bad:
        print("VERIFY FAILED:", bad)
        return 1
    return 0


def probe_bert_seqcls_prefix(bases, inputs):
    """Not a fixture: does PEFT prefix tuning run on BertForSequenceClassification?"""
    try:
        m = get_peft_model(bases.minilm("classify", 2), PrefixTuningConfig(task_type="SEQ_CLS",
                                                                         num_virtual_tokens=5))
        inp = inputs["minilm"]
        with torch.no_grad():
            out = m(input_ids=inp["input_ids"], attention_mask=inp["attention_mask"])
        return f"works: logits {list(out.logits.shape)}"
    except Exception as e:  # noqa: BLE001
        return f"fails: {type(e).__name__}: {e}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
