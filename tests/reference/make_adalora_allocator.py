#!/usr/bin/env python3
"""Writes tests/fixtures/adalora_allocator/: ten steps of HF PEFT's AdaLoRA rank allocator on a
real all-MiniLM-L6-v2 classifier (AdamW on the golden batch, `update_and_allocate(step)` after
every `optimizer.step()`, as HF's examples do).

For each step s (from 0) `steps.safetensors` holds, under peftc's tensor names:
  s{s}.param.<name>   A, E and B after the optimizer's update, before the allocator;
  s{s}.grad.<name>    that step's gradients (the allocator's importance reads p * grad);
  s{s}.after.<E>      E after the allocator (pruned triplets zeroed);
  s{s}.ipt_bar.<name>, s{s}.unc_bar.<name>
                      the allocator's smoothed importance and uncertainty after the step
                      (absent once it has reset them, from step total - tfinal);
  s{s}.pattern.<E>    the rank_pattern HF's config holds after the step (1 kept, 0 pruned),
                      absent while it is still None.
`case.json` has the configuration, the spec statement, and HF's budget per step.

Run with the reference venv: ~/.cache/peftc/venv/bin/python tests/reference/make_adalora_allocator.py
"""
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_golden as g  # noqa: E402  (inputs, paths, versions)
import torch  # noqa: E402
from peft import AdaLoraConfig, get_peft_model  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

OUT = g.REPO / "tests" / "fixtures" / "adalora_allocator"
TOTAL, TINIT, TFINAL, DELTA_T = 10, 2, 3, 1
STATEMENT = (f"adalora(init_r=4, target_r=2, alpha=16, tinit={TINIT}, tfinal={TFINAL}, "
             f"delta_t={DELTA_T}) on layers[0, 5].attn.{{q, v}}")


def peftc_name(hf):
    """`base_model.model.bert.encoder...query.lora_A.default` -> `encoder...query.lora_A`."""
    return hf.removeprefix("base_model.model.bert.").removesuffix(".default")


def main():
    torch.manual_seed(7)
    base = g.Bases().minilm("classify", 2)
    cfg = AdaLoraConfig(task_type="SEQ_CLS", init_r=4, target_r=2, lora_alpha=16,
                        tinit=TINIT, tfinal=TFINAL, deltaT=DELTA_T, total_step=TOTAL,
                        target_modules=r".*encoder\.layer\.(0|5)\.attention\.self\.(query|value)")
    model = get_peft_model(base, cfg)
    model.eval()  # dropout off; autograd on
    gen = torch.Generator().manual_seed(7)
    g.randomize_trainable(model, gen, 0.5)
    inp = g.minilm_inputs()
    labels = torch.tensor(g.MINILM_LABELS)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    tracked = {n: p for n, p in model.named_parameters()
               if p.requires_grad and any(t in n for t in ("lora_A", "lora_E", "lora_B"))}
    alloc = model.base_model.rankallocator
    io, budgets, losses = {}, [], []
    for step in range(TOTAL):
        out = model(input_ids=inp["input_ids"], attention_mask=inp["attention_mask"],
                    token_type_ids=inp["token_type_ids"], labels=labels)
        out.loss.backward()
        losses.append(out.loss.item())
        opt.step()
        for n, p in tracked.items():
            io[f"s{step}.param.{peftc_name(n)}"] = p.detach().clone()
            io[f"s{step}.grad.{peftc_name(n)}"] = p.grad.detach().clone()
        budgets.append(alloc.budget_schedule(step)[0])
        model.base_model.update_and_allocate(step)
        for n, p in tracked.items():
            if "lora_E" in n:
                io[f"s{step}.after.{peftc_name(n)}"] = p.detach().clone()
        for n, v in alloc.exp_avg_ipt.items():
            io[f"s{step}.ipt_bar.{n.removeprefix('bert.').removesuffix('.default')}"] = v.clone()
        for n, v in alloc.exp_avg_unc.items():
            io[f"s{step}.unc_bar.{n.removeprefix('bert.').removesuffix('.default')}"] = v.clone()
        pattern = model.peft_config["default"].rank_pattern
        for k, keep in (pattern or {}).items():
            name = k.removesuffix(".default").removeprefix("bert.")
            io[f"s{step}.pattern.{name}"] = torch.tensor(keep, dtype=torch.float32)
        opt.zero_grad()
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in io.items()}, str(OUT / "steps.safetensors"))
    meta = dict(statement=STATEMENT, total_step=TOTAL, tinit=TINIT, tfinal=TFINAL, deltaT=DELTA_T,
                lr=5e-3, budgets=budgets, losses=losses, seed=7, versions=g.VERSIONS,
                notes="AdamW(lr=5e-3) on the golden MiniLM batch; parameters randomized as in "
                      "make_golden.py (A, B N*0.05; E N*0.5; classifier N*0.05).")
    (OUT / "case.json").write_text(json.dumps(meta, indent=2) + "\n")
    pruned = {s: sum(1 for k, v in io.items() if k.startswith(f"s{s}.pattern.") for x in v if x == 0)
              for s in range(TOTAL)}
    print("budgets", budgets, "\npruned per step", pruned, "\nlosses", [round(x, 4) for x in losses])


if __name__ == "__main__":
    main()
