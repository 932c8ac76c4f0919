"""Golden fixtures for LST (Sung et al. 2022, ladder side-tuning), which no library ships: the
side network written here from transformers' own layer classes — each side block is a
`BertLayer` / `LlamaDecoderLayer` built from the backbone's config at 1/reduction of its
widths — independently of peftc's implementation, in the golden format of make_golden.py
(tests/fixtures/golden/README.md).

    ~/.cache/peftc/venv/bin/python tests/reference/make_lst.py

Writes tests/fixtures/golden/{minilm_cls_lst, smollm2_lst}/ with case.json (`native: true`: the
side network's tensors are in io.safetensors as `param.<peftc name>`, gradients as
`grad.<peftc name>`).

    s_0 = embed_down(x_0)
    s_i = side_i(mu_i * s_{i-1} + (1 - mu_i) * down_i(x_i)),   mu_i = sigmoid(gate_i / 0.1)
    out = x_L + up(s_n)            (then BERT's pooler + classifier, or LLaMA's norm + lm_head)

x_i is the backbone's layer-i output (the backbone runs under no_grad: nothing of it is part
of the backward, as in peftc).
"""

import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_golden as g  # noqa: E402  (re-execs with PYTHONHASHSEED=0, sets HF offline)

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from transformers.models.bert.modeling_bert import BertLayer  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding  # noqa: E402

T = 0.1
CASES = [
    dict(name="minilm_cls_lst", model="minilm", task="classify", num_labels=2, reduction=8,
         statements="lst(reduction=8) beside layers[*]"),
    # The first four layers only (a small fixture): the side state still joins the backbone
    # after its last layer, 26 layers later.
    dict(name="smollm2_lst", model="smollm2", task="causal_lm", num_labels=None, reduction=8,
         layers=range(4), statements="lst(reduction=8) beside layers[0..4]"),
]


def side_config(cfg, r):
    c = copy.deepcopy(cfg)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    c.hidden_size = cfg.hidden_size // r
    c.intermediate_size = cfg.intermediate_size // r
    if hasattr(cfg, "head_dim"):
        c.head_dim = head_dim // r
    c._attn_implementation = "eager"
    return c


def additive(mask, causal):
    B, S = mask.shape
    keep = mask[:, None, None, :].bool().expand(B, 1, S, S)
    if causal:
        keep = keep & torch.tril(torch.ones(S, S, dtype=torch.bool))[None, None]
    return torch.zeros(B, 1, S, S).masked_fill(~keep, torch.finfo(torch.float32).min)


def run(c, bases, inputs, seed):
    d = g.OUT / c["name"]
    d.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    inp = inputs[c["model"]]
    minilm = c["model"] == "minilm"
    base = bases.minilm("classify", c["num_labels"]) if minilm else bases.smol_causal()
    base.config._attn_implementation = "eager"
    for p in base.parameters():
        p.requires_grad_(False)
    cfg = base.config
    H, r = cfg.hidden_size, c["reduction"]
    sc = side_config(cfg, r)
    h = sc.hidden_size
    n_layers = cfg.num_hidden_layers
    prefix = "encoder.layer" if minilm else "model.layers"
    params = {}

    def rand(shape, scale=0.05, center=0.0):
        return (center + scale * torch.randn(shape, generator=gen)).requires_grad_(True)

    params["lst.embed_down.weight"] = rand([h, H])
    params["lst.embed_down.bias"] = rand([h])
    params["lst.up.weight"] = rand([H, h])
    params["lst.up.bias"] = rand([H])
    sides = {}
    for i in c.get("layers", range(n_layers)):
        pre = f"{prefix}.{i}.lst"
        params[f"{pre}.down.weight"] = rand([h, H])
        params[f"{pre}.down.bias"] = rand([h])
        params[f"{pre}.gate"] = rand([1], scale=0.1)
        blk = BertLayer(sc) if minilm else LlamaDecoderLayer(sc, layer_idx=i)
        blk.eval()
        for n, p in blk.named_parameters():
            norm = "LayerNorm" in n or "layernorm" in n
            with torch.no_grad():
                if norm and n.endswith("weight"):
                    p.copy_(1.0 + 0.05 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            params[f"{pre}.side.{n}"] = p
        sides[i] = blk
    mask = inp["attention_mask"]
    B, S = mask.shape
    with torch.no_grad():
        if minilm:
            x0 = base.bert.embeddings(input_ids=inp["input_ids"], token_type_ids=inp["token_type_ids"])
            outs, x = [], x0
            for layer in base.bert.encoder.layer:
                x = layer(x, additive(mask, False))
                outs.append(x)
        else:
            m = base.model
            x0 = m.embed_tokens(inp["input_ids"])
            pos = torch.arange(S)[None].expand(B, S)
            pe = m.rotary_emb(x0, pos)
            outs, x = [], x0
            for layer in m.layers:
                x = layer(x, attention_mask=additive(mask, True), position_ids=pos, position_embeddings=pe)
                outs.append(x)
    s = x0 @ params["lst.embed_down.weight"].T + params["lst.embed_down.bias"]
    if not minilm:
        pos = torch.arange(S)[None].expand(B, S)
        side_pe = LlamaRotaryEmbedding(sc)(s, pos)
    for i, blk in sides.items():
        pre = f"{prefix}.{i}.lst"
        mu = torch.sigmoid(params[f"{pre}.gate"] / T)
        down = outs[i] @ params[f"{pre}.down.weight"].T + params[f"{pre}.down.bias"]
        mixed = mu * s + (1 - mu) * down
        if minilm:
            s = blk(mixed, additive(mask, False))
        else:
            s = blk(mixed, attention_mask=additive(mask, True), position_ids=pos, position_embeddings=side_pe)
    final = outs[-1] + s @ params["lst.up.weight"].T + params["lst.up.bias"]
    io = {k: inp[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in inp}
    labels = g.labels_for(dict(model=c["model"], task=c["task"]), inp)
    io["labels"] = labels
    if minilm:
        for n, p in base.classifier.named_parameters():
            with torch.no_grad():
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
            p.requires_grad_(True)
            params[f"classifier.{n}"] = p
        logits = base.classifier(base.bert.pooler(final))
        loss = torch.nn.functional.cross_entropy(logits, labels)
        outs_ = {"logits": logits}
    else:
        logits = base.lm_head(base.model.norm(final))
        V = logits.shape[-1]
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1),
                                                 ignore_index=-100)
        rows = torch.arange(B)
        last = mask.sum(1) - 1
        outs_ = {"logits_last": logits[rows, last], "logits_first": logits[rows, 0]}
    loss.backward()
    tols = {}
    if not minilm:
        # A gate is one scalar whose gradient sums h * B * S products of both signs through 30
        # layers: peftc's f32 lands 1.3e-3 from this f32 reference on layer 3 (every other
        # gradient within 1e-3).
        tols["grad_tol"] = 2e-3
    meta = g.write_native_case(
        d, c, inp, seed, io, params, outs_, loss, tols=tols,
        notes="LST written on transformers' layer classes at 1/8 width by "
              "tests/reference/make_lst.py; side blocks N*0.1 (norm weights 1+0.05N), "
              "ladders, projections and head N*0.05, gates N*0.1")
    print(f"{c['name']}: loss {float(loss):.5f}, {meta['trainable_params']} params")


def main():
    bases = g.Bases()
    inputs = {"minilm": g.minilm_inputs()}
    tok = AutoTokenizer.from_pretrained(str(g.SMOL), gguf_file=g.SMOL_GGUF)
    inputs["smollm2"] = g.smol_inputs(tok)
    for i, c in enumerate(CASES):
        run(c, bases, inputs, 2400 + i)


if __name__ == "__main__":
    main()
