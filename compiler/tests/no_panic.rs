//! A deterministic, in-tree cousin of the `cargo fuzz` target: random edits of
//! valid specs must give a result or diagnostics, never a panic. (The fuzzer
//! explores far more; this keeps the property in every CI run.)

use peftc_compiler::estimate::Workload;
use peftc_compiler::train::{DType, OptimizerKind};
use peftc_compiler::{CheckOptions, check, compile_block};
use std::path::PathBuf;

const SEEDS: &[&str] = &[
    "model \"m\"\npeft a {\n    lora(r=8, alpha=16, dropout=0.05) on layers[*].attn.{q, v}\n}\ntrain { adapter = a task = classify labels = 3 batch = 4 seq_len = 16 }\n",
    "peft u {\n    lora(r=8) on layers[0..2, -1].attn.{q, v} gated\n    prefix(len=10, projection=16) on layers[*].attn gated\n    adapter(bottleneck=48, act=gelu) beside layers[*].mlp gated\n    ia3() on attn.{k, v}, mlp.down\n    prompt(len=4, init=text, text=\"hi\") on embed\n}\n",
    "peft b {\n    bitfit() on layers[-2..]\n    ia3() on \"**.{key,value}\"\n}\n",
    "peft s { lora(r={0, 4, 8}, alpha=8..=64 log) on attn.q }\nsearch x { space = s budget params <= 0.5%, memory <= 2GiB maximize accuracy minimize params trials = 4 sampler = tpe }\n",
];

/// xorshift64*: a tiny deterministic generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    ",",
    ".",
    "=",
    "\"",
    "*",
    "..",
    "..=",
    "-",
    "0",
    "7",
    "-3",
    "99999999999999999999",
    "1e309",
    "on",
    "after",
    "beside",
    "gated",
    "lora",
    "prefix",
    "layers",
    "attn",
    "mlp",
    "head",
    "embed",
    "r=0",
    "{}",
    "log",
    "step",
    "%",
    "GiB",
    "\n",
    "#",
    "é",
    "\\",
    "train {",
    "search s {",
    "peft b {",
];

fn mutate(rng: &mut Rng, s: &str) -> String {
    let mut v: Vec<char> = s.chars().collect();
    for _ in 0..1 + rng.below(2) {
        let at = rng.below(v.len() + 1);
        match rng.below(3) {
            0 if !v.is_empty() => {
                let end = (at + 1 + rng.below(6)).min(v.len());
                v.drain(at.min(v.len())..end);
            }
            1 => {
                let p = PIECES[rng.below(PIECES.len())];
                for (k, c) in p.chars().enumerate() {
                    v.insert((at + k).min(v.len()), c);
                }
            }
            _ => {
                if at < v.len() {
                    v[at] = PIECES[rng.below(PIECES.len())]
                        .chars()
                        .next()
                        .unwrap_or(' ');
                }
            }
        }
    }
    v.into_iter().collect()
}

#[test]
fn random_edits_never_panic() {
    let configs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/configs");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let w = Workload {
        batch: 2,
        seq: 8,
        dtype: DType::F32,
        optimizer: OptimizerKind::Adamw,
    };
    let (mut parsed, mut checked) = (0, 0);
    for i in 0..3000 {
        let seed = SEEDS[i % SEEDS.len()];
        let text = mutate(&mut rng, seed);
        let model = configs.join(if i % 2 == 0 {
            "minilm-l6"
        } else {
            "smollm2-135m"
        });
        let result = std::panic::catch_unwind(|| {
            let Ok(file) = peftc_grammar::parse(&text) else {
                return (false, false);
            };
            let opts = CheckOptions {
                lenient_data: false,
                spec_dir: configs.clone(),
                model_override: Some(model.clone()),
            };
            match check(&file, &opts) {
                Ok(c) => {
                    for b in &c.blocks {
                        let _ = compile_block(&c, b, None, w);
                    }
                    (true, true)
                }
                Err(ds) => {
                    let _ = peftc_grammar::render_all(&ds, "x.peft", &text);
                    (true, false)
                }
            }
        });
        match result {
            Ok((p, c)) => {
                parsed += p as usize;
                checked += c as usize;
            }
            Err(_) => panic!("panic on input:\n{text}"),
        }
    }
    // The edits must exercise the checker, not only the parser.
    assert!(
        parsed > 600 && checked > 60,
        "parsed {parsed}, checked {checked}"
    );
}
