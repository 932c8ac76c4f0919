//! The insert pass: splices each plan site's PEFT node into the base graph at
//! its module's anchor, wired as its method's [`Lowering`] says.

use super::graph::Graph;
use super::op::{DeltaCost, Node, Op};
use super::{IrError, NodeId};
use crate::estimate::{shared_params, site_params};
use crate::methods::{Lowering, Wiring};
use crate::plan::Plan;
use std::collections::BTreeMap;

pub(super) fn insert_sites(plan: &Plan, g: &mut Graph) -> Result<(), IrError> {
    let mut statements_counted: Vec<usize> = Vec::new();
    // Side-network steps, by statement, wired once every other site is in.
    let mut ladders: BTreeMap<usize, Vec<Node>> = BTreeMap::new();
    for (i, site) in plan.sites.iter().enumerate() {
        let Some(Lowering { op, wiring }) = site.method.site().lowering(site, &plan.model.dims)
        else {
            continue;
        };
        let Some(anchor) = g.anchors.get(&site.module).copied() else {
            return Err(IrError {
                node: 0,
                label: site.module.clone(),
                what: "no anchor for this module in the graph".into(),
            });
        };
        let mut node = Node::new(op, site.module.clone(), site.layer());
        let own = site_params(plan, site);
        node.trainable_params = own.trainable;
        node.frozen_params = own.frozen;
        // Tensors a statement's sites share go on its first node.
        if !statements_counted.contains(&site.statement) {
            statements_counted.push(site.statement);
            let shared = shared_params(plan, site.statement);
            node.trainable_params += shared.trainable;
            node.frozen_params += shared.frozen;
        }
        node.site = Some(i);
        let (x, y) = (anchor.entry, anchor.exit);
        match wiring {
            Wiring::Own => {
                // The module's own node computes with the trained copy.
                let own = &mut g.g[y];
                own.trainable_params += node.trainable_params;
                own.site = Some(i);
            }
            Wiring::Input => {
                // Applied to the module's input on its edge only.
                let n = g.add(node, &[x]);
                let edge =
                    g.g.find_edge(x, y)
                        .ok_or_else(|| g.error(y, "input edge not found"))?;
                let slot = g.g[edge];
                g.g.remove_edge(edge);
                g.g.add_edge(n, y, slot);
            }
            Wiring::AttentionKv => {
                let layer = site
                    .layer()
                    .ok_or_else(|| g.error(y, "prefix outside a layer"))?;
                let core = *g
                    .attention
                    .get(layer)
                    .ok_or_else(|| g.error(y, "no attention core"))?;
                let n = g.add(node, &[]);
                g.g.add_edge(n, core, 3);
            }
            Wiring::DeltaSum => {
                let delta = g.add(node, &[x]);
                let sum = g.add(
                    Node::new(super::op::Op::Add, site.module.clone(), site.layer()),
                    &[y, delta],
                );
                splice(g, y, sum, &[sum]);
            }
            Wiring::InputAndOutput => {
                let n = g.add(node, &[x, y]);
                splice(g, y, n, &[n]);
            }
            Wiring::Output => {
                let n = g.add(node, &[y]);
                splice(g, y, n, &[n]);
            }
            Wiring::Ladder => ladders.entry(site.statement).or_default().push(node),
        }
    }
    for (_, steps) in ladders {
        ladder(plan, g, steps)?;
    }
    Ok(())
}

/// A side network: each step reads its layer's output and the side state
/// before it (the first step, its layer's input); the last state, projected
/// back to the model's width, is added to the last layer's output. No
/// backbone node reads the side network before that sum, so the backbone
/// needs no gradient.
fn ladder(plan: &Plan, g: &mut Graph, steps: Vec<Node>) -> Result<(), IrError> {
    let mut state: Option<NodeId> = None;
    let mut reads_last: Vec<NodeId> = Vec::new();
    let last_layer = plan
        .model
        .layer_prefix(plan.model.dims.layers.saturating_sub(1));
    let Some(out) = g.anchors.get(&last_layer).map(|a| a.exit) else {
        return Err(IrError {
            node: 0,
            label: last_layer,
            what: "no anchor for the last layer in the graph".into(),
        });
    };
    let mut widths = None;
    for node in steps {
        let Some(anchor) = g.anchors.get(&node.label).copied() else {
            return Err(IrError {
                node: 0,
                label: node.label.clone(),
                what: "no anchor for this module in the graph".into(),
            });
        };
        if let Op::Delta { in_f, out_f, .. } = node.op {
            widths = Some((out_f, in_f));
        }
        let prev = state.unwrap_or(anchor.entry);
        let n = g.add(node, &[anchor.exit, prev]);
        if anchor.exit == out {
            reads_last.push(n);
        }
        state = Some(n);
    }
    let (Some(side), Some((from, to))) = (state, widths) else {
        return Ok(());
    };
    let label = g.g[side].label.clone();
    let layer = g.g[side].layer;
    let up = Node::new(
        Op::Delta {
            method: "lst_up",
            in_f: from,
            out_f: to,
            cost: DeltaCost {
                row_flops: 2 * (from * to) as u64,
                ..DeltaCost::default()
            },
        },
        label.clone(),
        layer,
    );
    let up = g.add(up, &[side]);
    let sum = g.add(Node::new(Op::Add, label, layer), &[out, up]);
    // The sum takes the last layer output's place for every reader but the
    // side network's own steps.
    reads_last.push(sum);
    splice(g, out, sum, &reads_last);
    Ok(())
}

/// Puts `n` (already reading `y`) between `y` and `y`'s consumers but those
/// in `keep` (`n` itself among them), and moves every anchor at `y` to `n`.
fn splice(g: &mut Graph, y: NodeId, n: NodeId, keep: &[NodeId]) {
    g.redirect(y, n, keep);
    for a in g.anchors.values_mut() {
        if a.exit == y {
            a.exit = n;
        }
        if a.entry == y {
            a.entry = n;
        }
    }
}
