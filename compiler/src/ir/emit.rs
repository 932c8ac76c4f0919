//! Printing the IR: a numbered listing (`--emit ir`) and Graphviz (`--emit dot`).

use super::graph::Graph;
use super::op::{Node, Op};
use std::fmt::Write as _;

fn attrs(op: &Op) -> String {
    match op {
        Op::Embedding {
            rows,
            dim,
            positional,
        } => {
            format!(
                "rows={rows} dim={dim}{}",
                if *positional { " positional" } else { "" }
            )
        }
        Op::Linear { in_f, out_f, bias } => {
            format!("{in_f}->{out_f}{}", if *bias { " +bias" } else { "" })
        }
        Op::Attention {
            heads,
            kv_heads,
            head_dim,
            causal,
            ..
        } => format!(
            "heads={heads} kv_heads={kv_heads} head_dim={head_dim}{}",
            if *causal { " causal" } else { "" }
        ),
        Op::LoraDelta {
            r,
            scale,
            dropout,
            gated,
            ..
        }
        | Op::Dora {
            r,
            scale,
            dropout,
            gated,
            ..
        } => format!(
            "r={r} scale={scale}{}{}",
            if *dropout > 0.0 {
                format!(" dropout={dropout}")
            } else {
                String::new()
            },
            if *gated { " gated" } else { "" }
        ),
        Op::Ia3 { dim } | Op::ScaleShift { dim } => format!("dim={dim}"),
        Op::Delta { in_f, out_f, .. } => format!("{in_f}->{out_f}"),
        Op::PromptConcat { len, .. } => format!("len={len}"),
        Op::PrefixKv { len, gated, .. } => {
            format!("len={len}{}", if *gated { " gated" } else { "" })
        }
        Op::Adapter {
            d_in,
            bottleneck,
            d_out,
            act,
            parallel,
            gated,
            ..
        } => format!(
            "{d_in}->{bottleneck}->{d_out} act={act:?}{}{}",
            if *parallel { " parallel" } else { " serial" },
            if *gated { " gated" } else { "" }
        )
        .to_lowercase(),
        Op::Dropout { p } => format!("p={p}"),
        _ => String::new(),
    }
}

fn params(n: &Node) -> String {
    match (n.frozen_params, n.trainable_params) {
        (0, 0) => String::new(),
        (f, 0) => format!("  frozen={f}"),
        (0, t) => format!("  trainable={t}"),
        (f, t) => format!("  frozen={f} trainable={t}"),
    }
}

/// One line per node in topological order:
/// `%12 = linear encoder.layer.0.attention.self.query (%10) 384->384 +bias : [B, S, 384]`.
pub fn to_text(g: &Graph) -> String {
    let mut out = String::new();
    let order = g.topo();
    for n in order {
        let node = &g.g[n];
        let ins: Vec<String> = g
            .inputs(n)
            .iter()
            .map(|i| format!("%{}", i.index()))
            .collect();
        let a = attrs(&node.op);
        let _ = writeln!(
            out,
            "%{} = {} {} ({}){}{} : {}{}{}",
            n.index(),
            node.op.name(),
            node.label,
            ins.join(", "),
            if a.is_empty() { "" } else { " " },
            a,
            node.shape,
            params(node),
            if node.requires_grad { "  grad" } else { "" }
        );
    }
    if !g.fusions.is_empty() {
        let _ = writeln!(out, "\n# fused ops: {}", g.fusions.len());
    }
    for f in &g.fusions {
        let parts: Vec<String> = f
            .nodes
            .iter()
            .map(|&n| format!("%{} {}", n.index(), g.g[n].op.name()))
            .collect();
        let _ = writeln!(out, "{} {} = {}", f.op.name(), f.label, parts.join(" + "));
    }
    out
}

/// Graphviz source; PEFT nodes are filled.
pub fn to_dot(g: &Graph) -> String {
    let mut out = String::from(
        "digraph peft {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n",
    );
    for n in g.topo() {
        let node = &g.g[n];
        let style = if node.op.is_peft() {
            ", style=filled, fillcolor=\"#ffd27f\""
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  n{} [label=\"{}\\n{}\\n{}\"{}];",
            n.index(),
            node.op.name(),
            node.label.replace('"', "'"),
            node.shape,
            style
        );
    }
    for e in g.g.edge_indices() {
        if let Some((a, b)) = g.g.edge_endpoints(e) {
            let _ = writeln!(out, "  n{} -> n{};", a.index(), b.index());
        }
    }
    out.push_str("}\n");
    out
}
