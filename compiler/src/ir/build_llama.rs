//! The base graph of a LLaMA-family decoder, mirroring `LlamaForCausalLM`
//! (pre-norm layers, RoPE, grouped-query attention, SwiGLU) and
//! `LlamaForSequenceClassification`'s `score` head on the last token.

use super::build::module_node;
use super::graph::{Anchor, Graph};
use super::op::{Act, LossKind, Node, Op};
use crate::plan::Plan;
use crate::task::TaskKind;

pub(super) fn build(plan: &Plan, g: &mut Graph) {
    let d = &plan.model.dims;
    let h = d.hidden;
    let q_out = d.heads * d.head_dim;
    let kv_out = d.kv_heads * d.head_dim;
    let tok = g.add(Node::new(Op::Tokens, "input_ids", None), &[]);
    let e = g.add(
        module_node(
            plan,
            Op::Embedding {
                rows: d.vocab,
                dim: h,
                positional: false,
            },
            "model.embed_tokens",
            None,
        ),
        &[tok],
    );
    g.anchors.insert(
        "model.embed_tokens".into(),
        Anchor {
            entry: tok,
            exit: e,
        },
    );
    let mut x = e;
    for l in 0..d.layers {
        let p = format!("model.layers.{l}");
        let layer_in = x;
        let norm = |g: &mut Graph, name: &str, input| {
            let path = format!("{p}.{name}");
            let n = g.add(
                module_node(plan, Op::RmsNorm { dim: h }, &path, Some(l)),
                &[input],
            );
            g.anchors.insert(
                path,
                Anchor {
                    entry: input,
                    exit: n,
                },
            );
            n
        };
        let proj = |g: &mut Graph, name: &str, i: usize, o: usize, bias: bool, input| {
            let path = format!("{p}.{name}");
            let n = g.add(
                module_node(
                    plan,
                    Op::Linear {
                        in_f: i,
                        out_f: o,
                        bias,
                    },
                    &path,
                    Some(l),
                ),
                &[input],
            );
            g.anchors.insert(
                path,
                Anchor {
                    entry: input,
                    exit: n,
                },
            );
            n
        };
        let n1 = norm(g, "input_layernorm", x);
        let q = proj(g, "self_attn.q_proj", h, q_out, d.qkv_bias, n1);
        let k = proj(g, "self_attn.k_proj", h, kv_out, d.qkv_bias, n1);
        let v = proj(g, "self_attn.v_proj", h, kv_out, d.qkv_bias, n1);
        let qr = g.add(
            Node::new(
                Op::Rope {
                    heads: d.heads,
                    head_dim: d.head_dim,
                },
                format!("{p}.self_attn.rope_q"),
                Some(l),
            ),
            &[q],
        );
        let kr = g.add(
            Node::new(
                Op::Rope {
                    heads: d.kv_heads,
                    head_dim: d.head_dim,
                },
                format!("{p}.self_attn.rope_k"),
                Some(l),
            ),
            &[k],
        );
        let core = g.add(
            Node::new(
                Op::Attention {
                    heads: d.heads,
                    kv_heads: d.kv_heads,
                    head_dim: d.head_dim,
                    causal: true,
                    dropout: 0.0,
                },
                format!("{p}.self_attn"),
                Some(l),
            ),
            &[qr, kr, v],
        );
        g.attention.push(core);
        let o = proj(g, "self_attn.o_proj", q_out, h, d.o_bias, core);
        g.anchors
            .insert(format!("{p}.self_attn"), Anchor { entry: n1, exit: o });
        let a1 = g.add(
            Node::new(Op::Add, format!("{p}.residual_attn"), Some(l)),
            &[layer_in, o],
        );
        let n2 = norm(g, "post_attention_layernorm", a1);
        let gate = proj(g, "mlp.gate_proj", h, d.intermediate, d.mlp_bias, n2);
        let act = g.add(
            Node::new(Op::Act(Act::Silu), format!("{p}.mlp.act_fn"), Some(l)),
            &[gate],
        );
        let up = proj(g, "mlp.up_proj", h, d.intermediate, d.mlp_bias, n2);
        let m = g.add(Node::new(Op::Mul, format!("{p}.mlp"), Some(l)), &[act, up]);
        let down = proj(g, "mlp.down_proj", d.intermediate, h, d.mlp_bias, m);
        g.anchors.insert(
            format!("{p}.mlp"),
            Anchor {
                entry: n2,
                exit: down,
            },
        );
        let a2 = g.add(
            Node::new(Op::Add, format!("{p}.residual_mlp"), Some(l)),
            &[a1, down],
        );
        g.anchors.insert(
            p,
            Anchor {
                entry: layer_in,
                exit: a2,
            },
        );
        x = a2;
    }
    let f = g.add(
        module_node(plan, Op::RmsNorm { dim: h }, "model.norm", None),
        &[x],
    );
    g.anchors
        .insert("model.norm".into(), Anchor { entry: x, exit: f });
    g.output = f;
    match plan.task.kind {
        TaskKind::CausalLm => {
            let lm = g.add(
                module_node(
                    plan,
                    Op::Linear {
                        in_f: h,
                        out_f: d.vocab,
                        bias: false,
                    },
                    "lm_head",
                    None,
                ),
                &[f],
            );
            g.anchors
                .insert("lm_head".into(), Anchor { entry: f, exit: lm });
            let loss = g.add(
                Node::new(
                    Op::Loss(LossKind::NextToken { vocab: d.vocab }),
                    "loss",
                    None,
                ),
                &[lm],
            );
            g.output = lm;
            g.loss = Some(loss);
        }
        TaskKind::Classify => {
            let classes = plan.task.num_labels.unwrap_or(2);
            let last = g.add(Node::new(Op::LastToken, "last_token", None), &[f]);
            let sc = g.add(
                module_node(
                    plan,
                    Op::Linear {
                        in_f: h,
                        out_f: classes,
                        bias: false,
                    },
                    "score",
                    None,
                ),
                &[last],
            );
            g.anchors.insert(
                "score".into(),
                Anchor {
                    entry: last,
                    exit: sc,
                },
            );
            let loss = g.add(
                Node::new(Op::Loss(LossKind::Classify { classes }), "loss", None),
                &[sc],
            );
            g.output = sc;
            g.loss = Some(loss);
        }
        TaskKind::Feature => {}
    }
}
