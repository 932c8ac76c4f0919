# Compares SmolLM2 golden logits (HF f32) and peftc's (dumped by `PEFTC_GOLDEN_DUMP=/tmp/dump cargo test -p peftc-runtime --test golden`)
# against HF transformers run in float64. Usage: python tests/reference/f64_check.py smollm2_lora smollm2_prefix ...
import json, sys, numpy as np, torch, warnings
warnings.filterwarnings("ignore")
from transformers import AutoModelForCausalLM
from peft import PeftModel
from safetensors.torch import load_file
A='/root/.cache/peftc/assets/SmolLM2-135M-Instruct'
base = AutoModelForCausalLM.from_pretrained(A, gguf_file='SmolLM2-135M-Instruct.Q4_1.gguf', torch_dtype=torch.float64)
base.eval()
import copy
for case in sys.argv[1:]:
    d=f'tests/fixtures/golden/{case}'
    cj=json.load(open(f'{d}/case.json')); io=load_file(f'{d}/io.safetensors')
    m=copy.deepcopy(base)
    import os
    if os.path.exists(f'{d}/adapter'):
        m=PeftModel.from_pretrained(m, f'{d}/adapter'); m=m.double()
    with torch.no_grad():
        out=m(input_ids=io['input_ids'], attention_mask=io['attention_mask']).logits
    for key,which in [('logits_first','first'),('logits_last','last')]:
        pos=cj['logits_positions'][which]
        ref=torch.stack([out[r,pos[r]] for r in range(out.shape[0])]).numpy()
        hf32=io[key].numpy().astype(np.float64)
        ours=np.fromfile(f'/tmp/dump/{case}.{key}.f32',dtype=np.float32).astype(np.float64).reshape(ref.shape)
        print(case,key,'max|ref|=%.2f'%np.abs(ref).max(),'HF32-HF64=%.3e'%np.abs(hf32-ref).max(),'ours-HF64=%.3e'%np.abs(ours-ref).max(),'ours-HF32=%.3e'%np.abs(ours-hf32).max())
