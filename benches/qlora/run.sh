#!/usr/bin/env bash
# QLoRA on Qwen2.5-Coder-0.5B-Instruct: LoRA r=8 q,v, causal LM on BBC News, batch 4 x seq 128,
# the same steps on three bases: the f32 safetensors copy (benches/qlora/make_safetensors.py),
# the same with `quantize nf4`, and the GGUF kept packed. Peak RSS and time from /usr/bin/time -v.
#
#   benches/qlora/run.sh [STEPS]       (default 4; about 30 s a step on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${1:-4}
ASSETS=${PEFTC_ASSETS:-$HOME/.cache/peftc/assets}
TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/peftc/target}
PEFTC=$TARGET/release/peftc
F32=$ASSETS/qwen2.5-0.5b-f32
[ -f "$F32/model.safetensors" ] || ~/.cache/peftc/venv/bin/python benches/qlora/make_safetensors.py
CARGO_TARGET_DIR=$TARGET cargo build --release -p peftc --locked -q
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
spec() { # NAME MODEL-LINE
  cat > "$WORK/$1.peft" <<SPEC
$2
peft qv_lora {
    lora(r=8, alpha=16) on layers[*].attn.{q, v}
}
train {
    adapter = qv_lora
    task = causal_lm
    data = "$ASSETS/bbcnews"
    max_steps = $STEPS
    batch = 4
    seq_len = 128
    lr = 5e-4
    seed = 0
    eval_every = $STEPS
    eval_max = 16
}
SPEC
}
spec f32 "model \"$F32\""
spec nf4 "model \"$F32\" quantize nf4"
spec gguf "model \"$ASSETS/Qwen2.5-Coder-0.5B-Instruct/qwen2.5-coder-0.5b-instruct.gguf\""
printf '%-6s %12s %10s %s\n' base "peak RSS MiB" "wall s" "result"
for b in f32 nf4 gguf; do
  "$PEFTC" compile "$WORK/$b.peft" | grep -E "frozen weights|^  peak" | sed "s/^/[$b estimate] /"
  /usr/bin/time -v "$PEFTC" train "$WORK/$b.peft" --out "$WORK/run-$b" > "$WORK/$b.log" 2>&1
  rss=$(awk -F: '/Maximum resident/ {print int($2/1024)}' "$WORK/$b.log")
  wall=$(awk '/Elapsed \(wall clock\)/ {print $NF}' "$WORK/$b.log")
  printf '%-6s %12s %10s %s\n' "$b" "$rss" "$wall" "$(grep '^trained' "$WORK/$b.log")"
done
