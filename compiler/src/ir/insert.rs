//! The insert pass: splices each plan site's PEFT node into the base graph at
//! its module's anchor, wired as its method's [`Lowering`] says.

use super::graph::Graph;
use super::op::Node;
use super::{IrError, NodeId};
use crate::estimate::{shared_params, site_params};
use crate::methods::{Lowering, Wiring};
use crate::plan::Plan;

pub(super) fn insert_sites(plan: &Plan, g: &mut Graph) -> Result<(), IrError> {
    let mut statements_counted: Vec<usize> = Vec::new();
    for (i, site) in plan.sites.iter().enumerate() {
        let Some(Lowering { op, wiring }) = site.method.site().lowering(site) else {
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
                splice(g, y, sum);
            }
            Wiring::InputAndOutput => {
                let n = g.add(node, &[x, y]);
                splice(g, y, n);
            }
            Wiring::Output => {
                let n = g.add(node, &[y]);
                splice(g, y, n);
            }
        }
    }
    Ok(())
}

/// Puts `n` (already reading `y`) between `y` and `y`'s other consumers, and
/// moves every anchor at `y` to `n`.
fn splice(g: &mut Graph, y: NodeId, n: NodeId) {
    g.redirect(y, n, n);
    for a in g.anchors.values_mut() {
        if a.exit == y {
            a.exit = n;
        }
        if a.entry == y {
            a.entry = n;
        }
    }
}
