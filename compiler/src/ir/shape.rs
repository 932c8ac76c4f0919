//! Shape inference: every node's output shape from its inputs', in topological
//! order, checking that the ops agree (a linear's input width, an add's operands).

use super::graph::Graph;
use super::op::{Dim, Op, Shape};
use super::{IrError, NodeId};

pub(super) fn infer(g: &mut Graph) -> Result<(), IrError> {
    let order = g.topo();
    if order.len() != g.len() {
        return Err(IrError {
            node: 0,
            label: "graph".into(),
            what: "the graph has a cycle".into(),
        });
    }
    for n in order {
        let ins: Vec<Shape> = g.inputs(n).iter().map(|&i| g.g[i].shape.clone()).collect();
        let shape = output_shape(g, n, &ins)?;
        // Prefix nodes learn their width from the attention they feed.
        g.g[n].shape = shape;
    }
    Ok(())
}

fn expect_last(g: &Graph, n: NodeId, s: &Shape, want: usize) -> Result<(), IrError> {
    match s.last() {
        Some(Dim::Const(w)) if w == want => Ok(()),
        other => Err(g.error(
            n,
            format!("expected last dimension {want}, found {other:?} in {s}"),
        )),
    }
}

fn input<'a>(g: &Graph, n: NodeId, ins: &'a [Shape], i: usize) -> Result<&'a Shape, IrError> {
    ins.get(i)
        .ok_or_else(|| g.error(n, format!("missing input {i}")))
}

fn output_shape(g: &Graph, n: NodeId, ins: &[Shape]) -> Result<Shape, IrError> {
    let c = Dim::Const;
    Ok(match &g.g[n].op {
        Op::Tokens => Shape(vec![Dim::Batch, Dim::SEQ]),
        Op::Embedding { dim, .. } => {
            let x = input(g, n, ins, 0)?;
            Shape(vec![x.0[0], x.0[1], c(*dim)])
        }
        Op::Add | Op::Mul => {
            let (a, b) = (input(g, n, ins, 0)?, input(g, n, ins, 1)?);
            if a != b {
                return Err(g.error(n, format!("operands differ: {a} vs {b}")));
            }
            a.clone()
        }
        Op::LayerNorm { dim } | Op::RmsNorm { dim } | Op::Ia3 { dim } | Op::ScaleShift { dim } => {
            let x = input(g, n, ins, 0)?;
            expect_last(g, n, x, *dim)?;
            x.clone()
        }
        Op::Dropout { .. } | Op::Act(_) => input(g, n, ins, 0)?.clone(),
        Op::Rope { heads, head_dim } => {
            let x = input(g, n, ins, 0)?;
            expect_last(g, n, x, heads * head_dim)?;
            x.clone()
        }
        Op::Linear { in_f, out_f, .. } => {
            let x = input(g, n, ins, 0)?;
            expect_last(g, n, x, *in_f)?;
            x.with_last(c(*out_f))
        }
        Op::LoraDelta { in_f, out_f, .. } | Op::Delta { in_f, out_f, .. } => {
            let x = input(g, n, ins, 0)?;
            expect_last(g, n, x, *in_f)?;
            x.with_last(c(*out_f))
        }
        Op::Dora { in_f, out_f, .. } => {
            let (x, y) = (input(g, n, ins, 0)?, input(g, n, ins, 1)?);
            expect_last(g, n, x, *in_f)?;
            expect_last(g, n, y, *out_f)?;
            y.clone()
        }
        Op::Attention {
            heads,
            kv_heads,
            head_dim,
            ..
        } => {
            let (q, k, v) = (
                input(g, n, ins, 0)?,
                input(g, n, ins, 1)?,
                input(g, n, ins, 2)?,
            );
            expect_last(g, n, q, heads * head_dim)?;
            expect_last(g, n, k, kv_heads * head_dim)?;
            expect_last(g, n, v, kv_heads * head_dim)?;
            if let Some(p) = ins.get(3) {
                expect_last(g, n, p, 2 * kv_heads * head_dim)?;
            }
            q.clone()
        }
        Op::FirstToken | Op::LastToken => {
            let x = input(g, n, ins, 0)?;
            Shape(vec![x.0[0], x.0[2]])
        }
        Op::Loss(_) => Shape(vec![]),
        Op::PromptConcat { len, dim } => {
            let x = input(g, n, ins, 0)?;
            expect_last(g, n, x, *dim)?;
            let seq = match x.0[1] {
                Dim::Seq { extra } => Dim::Seq { extra: extra + len },
                other => {
                    return Err(g.error(n, format!("prompt on a non-sequence dimension {other}")));
                }
            };
            Shape(vec![x.0[0], seq, x.0[2]])
        }
        Op::PrefixKv { len, .. } => {
            // Width from the attention it feeds.
            let core = g
                .consumers(n)
                .first()
                .map(|(c, _)| *c)
                .ok_or_else(|| g.error(n, "prefix feeds nothing"))?;
            let Op::Attention {
                kv_heads, head_dim, ..
            } = g.g[core].op
            else {
                return Err(g.error(n, "prefix must feed an attention"));
            };
            Shape(vec![Dim::Batch, c(*len), c(2 * kv_heads * head_dim)])
        }
        Op::Adapter {
            d_in,
            d_out,
            parallel,
            ..
        } => {
            let x = input(g, n, ins, 0)?;
            expect_last(g, n, x, *d_in)?;
            if *parallel {
                let y = input(g, n, ins, 1)?;
                expect_last(g, n, y, *d_out)?;
                y.clone()
            } else {
                x.clone()
            }
        }
    })
}
