//! The insert pass: splices each plan site's PEFT node into the base graph at
//! its module's anchor.

use super::build::Graph;
use super::op::{Node, Op};
use super::{IrError, NodeId};
use crate::estimate::site_params;
use crate::methods::MethodConfig;
use crate::plan::{Plan, Site};
use peftc_grammar::ast::Placement;

pub(super) fn insert_sites(plan: &Plan, g: &mut Graph) -> Result<(), IrError> {
    let mut projection_counted: Vec<usize> = Vec::new();
    for (i, site) in plan.sites.iter().enumerate() {
        let Some(anchor) = g.anchors.get(&site.module).copied() else {
            return Err(IrError {
                node: 0,
                label: site.module.clone(),
                what: "no anchor for this module in the graph".into(),
            });
        };
        let mut node = Node::new(op_for(site), site.module.clone(), site.layer());
        node.trainable_params =
            site_params(plan, site) + shared_params(plan, site, &mut projection_counted);
        node.site = Some(i);
        let (x, y) = (anchor.entry, anchor.exit);
        match &site.method {
            MethodConfig::Ia3 if site.feedforward => {
                // Scale the projection's input on its edge only.
                let n = g.add(node, &[x]);
                let edge =
                    g.g.find_edge(x, y)
                        .ok_or_else(|| g.error(y, "ia3: input edge not found"))?;
                let slot = g.g[edge];
                g.g.remove_edge(edge);
                g.g.add_edge(n, y, slot);
            }
            MethodConfig::Prefix(_) => {
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
            MethodConfig::Lora(l) if !l.dora => {
                let delta = g.add(node, &[x]);
                let sum = g.add(
                    Node::new(Op::Add, site.module.clone(), site.layer()),
                    &[y, delta],
                );
                splice(g, y, sum);
            }
            MethodConfig::Adapter(a) if a.parallel => {
                let n = g.add(node, &[x, y]);
                splice(g, y, n);
            }
            MethodConfig::Lora(_) => {
                let n = g.add(node, &[x, y]);
                splice(g, y, n);
            }
            _ => {
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

/// A prefix projection MLP is shared by a statement's layers: its parameters
/// go on the statement's first node.
fn shared_params(plan: &Plan, site: &Site, counted: &mut Vec<usize>) -> u64 {
    let MethodConfig::Prefix(p) = &site.method else {
        return 0;
    };
    if p.projection == 0 || counted.contains(&site.statement) {
        return 0;
    }
    counted.push(site.statement);
    let d = &plan.model.dims;
    let kv = (d.kv_heads * d.head_dim) as u64;
    let layers = plan
        .sites
        .iter()
        .filter(|t| t.statement == site.statement)
        .count() as u64;
    let (len, proj) = (p.len as u64, p.projection as u64);
    len * kv + kv * proj + proj + proj * layers * 2 * kv + layers * 2 * kv
}

fn op_for(site: &Site) -> Op {
    let (i, o) = (site.in_dim, site.out_dim);
    match &site.method {
        MethodConfig::Lora(l) if l.dora => Op::Dora {
            in_f: i,
            out_f: o,
            r: l.r,
            scale: l.scale(),
            dropout: l.dropout,
            gated: site.gated,
        },
        MethodConfig::Lora(l) => Op::LoraDelta {
            in_f: i,
            out_f: o,
            r: l.r,
            scale: l.scale(),
            dropout: l.dropout,
            gated: site.gated,
        },
        MethodConfig::Ia3 => Op::Ia3 {
            dim: if site.feedforward { i } else { o },
        },
        MethodConfig::Prompt(p) => Op::PromptConcat { len: p.len, dim: o },
        MethodConfig::Prefix(p) => Op::PrefixKv {
            len: p.len,
            kv_dim: 0, // filled by shape inference from the attention it feeds
            gated: site.gated,
        },
        MethodConfig::Adapter(a) => Op::Adapter {
            d_in: if site.placement == Placement::Beside {
                i
            } else {
                o
            },
            bottleneck: a.bottleneck,
            d_out: o,
            act: a.act.into(),
            scale: a.scale,
            parallel: a.parallel,
            gated: site.gated,
        },
        MethodConfig::Bitfit => Op::Add,
    }
}
