//! The fusion pass: rewrite rules kept as data ([`RULES`]), each a small
//! pattern of ops around a base linear (or one op that is a whole subgraph),
//! and the fused kernel it becomes. The pass does not change the graph, whose
//! ops the estimators read; it records which nodes each fused kernel covers,
//! one [`Fusion`] per site, which `--emit ir` lists and the runtime's kernels
//! implement (`runtime/src/kernels/`: `linear` + `lora_expand`, `dora_mix`,
//! `scale_cols`, `adapter`).
//!
//! **A node belongs to at most one fusion**; rules are tried in order and the
//! first that matches claims its nodes. **The decision is made once, here**:
//! lowering records each site's fused op in the plan ([`crate::plan::Site::fusion`])
//! and the runtime dispatches on it, running the reference composition where
//! the plan names none. A gated site is never fused: no kernel takes the gate.

use super::NodeId;
use super::graph::Graph;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A fused kernel the runtime implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FusedOp {
    LoraLinear,
    DoraLinear,
    Ia3Linear,
    Adapter,
}

impl FusedOp {
    /// The name `--emit ir` lists.
    pub fn name(self) -> &'static str {
        match self {
            FusedOp::LoraLinear => "fused_lora_linear",
            FusedOp::DoraLinear => "fused_dora_linear",
            FusedOp::Ia3Linear => "fused_ia3_linear",
            FusedOp::Adapter => "fused_adapter",
        }
    }
}

/// How a rule recognizes its ops, by their names ([`super::Op::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// `add(linear(x), delta(x))`: a delta beside a linear on the same input,
    /// summed into its output.
    SumWithLinear { delta: &'static str },
    /// `op(x, linear(x))`: an op reading a linear's input and output.
    WrapsLinear { op: &'static str },
    /// `op(linear(x))` or `linear(op(x))`: a vector op on either side of a linear.
    BesideLinear { op: &'static str },
    /// One op that stands for a whole subgraph.
    Whole { op: &'static str },
}

#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The fused op (its name says what it fuses).
    pub op: FusedOp,
    /// What the kernel computes, for listings.
    pub computes: &'static str,
    pub pattern: Pattern,
}

pub const RULES: &[Rule] = &[
    Rule {
        op: FusedOp::LoraLinear,
        computes: "y = x·Wᵀ (+ b) + s·(drop(x)·Aᵀ)·Bᵀ; backward never forms a W-sized gradient",
        pattern: Pattern::SumWithLinear {
            delta: "lora_delta",
        },
    },
    Rule {
        op: FusedOp::DoraLinear,
        computes: "y = m ⊙ (x·(W + s·BA)ᵀ) / ‖W + s·BA‖_col, with the column norms from W, A, B",
        pattern: Pattern::WrapsLinear { op: "dora" },
    },
    Rule {
        op: FusedOp::Ia3Linear,
        computes: "y = (x·Wᵀ + b) ⊙ l, or x ⊙ l before a feed-forward down projection",
        pattern: Pattern::BesideLinear { op: "ia3_scale" },
    },
    Rule {
        op: FusedOp::Adapter,
        computes: "y + s·(act(x·W_downᵀ + b_down)·W_upᵀ + b_up) in one op; keeps only the [n, r] pre-activation",
        pattern: Pattern::Whole { op: "adapter" },
    },
];

/// One fused kernel at one site.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fusion {
    pub op: FusedOp,
    /// The module (checkpoint path) it sits on.
    pub label: String,
    /// The nodes it covers, in data-flow order.
    #[serde(skip)]
    pub nodes: Vec<NodeId>,
}

/// Applies every rule to `g`.
pub fn fuse(g: &Graph) -> Vec<Fusion> {
    let mut claimed: BTreeSet<NodeId> = BTreeSet::new();
    let mut out = Vec::new();
    let order = g.topo();
    for rule in RULES {
        for &n in &order {
            if claimed.contains(&n) {
                continue;
            }
            let Some(nodes) = matches(g, rule.pattern, n) else {
                continue;
            };
            if nodes.iter().any(|m| claimed.contains(m)) {
                continue;
            }
            claimed.extend(nodes.iter().copied());
            out.push(Fusion {
                op: rule.op,
                label: g.g[n].label.clone(),
                nodes,
            });
        }
    }
    out.sort_by_key(|f| f.nodes.iter().map(|n| n.index()).max());
    out
}

fn name(g: &Graph, n: NodeId) -> &'static str {
    g.g[n].op.name()
}

/// The nodes `pattern` covers when rooted at `n` (its last node).
fn matches(g: &Graph, pattern: Pattern, n: NodeId) -> Option<Vec<NodeId>> {
    let ins = g.inputs(n);
    match pattern {
        Pattern::SumWithLinear { delta } => {
            if name(g, n) != "add" || ins.len() != 2 {
                return None;
            }
            let (lin, d) = if name(g, ins[0]) == "linear" {
                (ins[0], ins[1])
            } else {
                (ins[1], ins[0])
            };
            (name(g, lin) == "linear"
                && name(g, d) == delta
                && !g.g[d].op.gated()
                && g.inputs(lin).first() == g.inputs(d).first())
            .then(|| vec![lin, d, n])
        }
        Pattern::WrapsLinear { op } => {
            if name(g, n) != op
                || g.g[n].op.gated()
                || ins.len() != 2
                || name(g, ins[1]) != "linear"
            {
                return None;
            }
            (g.inputs(ins[1]).first() == Some(&ins[0])).then(|| vec![ins[1], n])
        }
        Pattern::BesideLinear { op } => match name(g, n) {
            // Output scale: the op reads a linear that nobody else reads.
            o if o == op => {
                let lin = *ins.first()?;
                (name(g, lin) == "linear" && g.consumers(lin).len() == 1).then(|| vec![lin, n])
            }
            // Input scale: the linear reads the op, which nobody else reads.
            "linear" => {
                let s = *ins.first()?;
                (name(g, s) == op && g.consumers(s).len() == 1).then(|| vec![s, n])
            }
            _ => None,
        },
        Pattern::Whole { op } => (name(g, n) == op && !g.g[n].op.gated()).then(|| vec![n]),
    }
}

#[cfg(test)]
mod tests {
    use crate::estimate::Workload;
    use crate::train::{DType, OptimizerKind};
    use crate::{CheckOptions, check, compile_block};

    /// The fused kernels of a MiniLM block with every fusable method.
    fn fusions(body: &str) -> Vec<(String, String, Vec<String>)> {
        let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/configs/minilm-l6");
        let src = format!("model \"{}\"\npeft a {{\n{body}\n}}\n", config.display());
        let file = peftc_grammar::parse(&src).expect("parses");
        let c = check(&file, &CheckOptions::default()).expect("checks");
        let w = Workload {
            batch: 2,
            seq: 8,
            dtype: DType::F32,
            optimizer: OptimizerKind::Adamw,
        };
        let out = compile_block(&c, &c.blocks[0], None, w).expect("compiles");
        out.graph
            .fusions
            .iter()
            .map(|f| {
                let ops = f
                    .nodes
                    .iter()
                    .map(|&n| out.graph.g[n].op.name().to_string());
                (f.op.name().to_string(), f.label.clone(), ops.collect())
            })
            .collect()
    }

    #[test]
    fn each_method_site_becomes_one_fused_op() {
        let f = fusions(
            "lora(r=4) on layers[*].attn.q\n dora(r=4) on layers[*].attn.v\n \
             ia3() on layers[*].attn.k, layers[*].mlp.down\n adapter(bottleneck=8) after layers[*].mlp",
        );
        let count = |r: &str| f.iter().filter(|x| x.0 == r).count();
        assert_eq!(count("fused_lora_linear"), 6);
        assert_eq!(count("fused_dora_linear"), 6);
        assert_eq!(count("fused_ia3_linear"), 12);
        assert_eq!(count("fused_adapter"), 6);
        let q0 = f
            .iter()
            .find(|x| x.1 == "encoder.layer.0.attention.self.query")
            .expect("q of layer 0");
        assert_eq!(q0.2, ["linear", "lora_delta", "add"]);
        let down = f
            .iter()
            .find(|x| x.1 == "encoder.layer.3.output.dense" && x.0 == "fused_ia3_linear")
            .expect("ia3 on layer 3's down projection");
        assert_eq!(down.2, ["ia3_scale", "linear"], "input scale comes first");
    }

    #[test]
    fn gated_sites_are_not_fused() {
        let f = fusions(
            "lora(r=4) on layers[*].attn.q gated\n dora(r=4) on layers[*].attn.v gated\n \
             adapter(bottleneck=8) after layers[*].mlp gated\n lora(r=4) on layers[*].attn.k",
        );
        let count = |r: &str| f.iter().filter(|x| x.0 == r).count();
        assert_eq!(count("fused_lora_linear"), 6, "only the ungated k: {f:?}");
        assert_eq!(count("fused_dora_linear"), 0);
        assert_eq!(count("fused_adapter"), 0);
    }

    #[test]
    fn a_node_is_fused_once() {
        // LoRA and (IA)³ on the same projection: the scale reads the sum, not
        // the linear, so only the LoRA fusion applies there.
        let f = fusions("lora(r=4) on layers[*].attn.q\n ia3() on layers[*].attn.q");
        assert_eq!(f.iter().filter(|x| x.0 == "fused_lora_linear").count(), 6);
        assert_eq!(f.iter().filter(|x| x.0 == "fused_ia3_linear").count(), 0);
        let mut seen = std::collections::BTreeSet::new();
        for x in &f {
            assert!(seen.insert((x.1.clone(), x.2.clone())), "{x:?} twice");
        }
    }
}
