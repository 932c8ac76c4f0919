//! The base graph of a BERT encoder, mirroring `BertModel.forward` (post-norm
//! layers) and `BertForSequenceClassification`'s pooler + classifier.

use super::build::module_node;
use super::graph::{Anchor, Graph};
use super::op::{Act, LossKind, Node, Op};
use crate::plan::Plan;
use crate::task::TaskKind;

/// HF BERT's dropout probabilities (`hidden_dropout_prob`, `attention_probs_dropout_prob`).
const HIDDEN_DROPOUT: f64 = 0.1;
const ATTN_DROPOUT: f64 = 0.1;

pub(super) fn build(plan: &Plan, g: &mut Graph) {
    let d = &plan.model.dims;
    let h = d.hidden;
    let tok = g.add(Node::new(Op::Tokens, "input_ids", None), &[]);
    let emb = |rows, positional| Op::Embedding {
        rows,
        dim: h,
        positional,
    };
    let we = g.add(
        module_node(
            plan,
            emb(d.vocab, false),
            "embeddings.word_embeddings",
            None,
        ),
        &[tok],
    );
    g.anchors.insert(
        "embeddings.word_embeddings".into(),
        Anchor {
            entry: tok,
            exit: we,
        },
    );
    // Position and token-type rows are indexed by position; they read the
    // hidden stream only for its length (which a soft prompt extends).
    let pe = g.add(
        module_node(
            plan,
            emb(d.max_positions, true),
            "embeddings.position_embeddings",
            None,
        ),
        &[we],
    );
    let te = g.add(
        module_node(
            plan,
            emb(d.type_vocab, true),
            "embeddings.token_type_embeddings",
            None,
        ),
        &[we],
    );
    let s1 = g.add(Node::new(Op::Add, "embeddings", None), &[we, pe]);
    let s2 = g.add(Node::new(Op::Add, "embeddings", None), &[s1, te]);
    let ln = g.add(
        module_node(plan, Op::LayerNorm { dim: h }, "embeddings.LayerNorm", None),
        &[s2],
    );
    g.anchors.insert(
        "embeddings.LayerNorm".into(),
        Anchor {
            entry: s2,
            exit: ln,
        },
    );
    let mut x = g.add(
        Node::new(
            Op::Dropout { p: HIDDEN_DROPOUT },
            "embeddings.dropout",
            None,
        ),
        &[ln],
    );

    for l in 0..d.layers {
        let p = format!("encoder.layer.{l}");
        let lin = |name: &str, i, o| {
            (
                format!("{p}.{name}"),
                Op::Linear {
                    in_f: i,
                    out_f: o,
                    bias: true,
                },
            )
        };
        let layer_in = x;
        let proj = |g: &mut Graph, name: &str, i: usize, o: usize, input| {
            let (path, op) = lin(name, i, o);
            let n = g.add(module_node(plan, op, &path, Some(l)), &[input]);
            g.anchors.insert(
                path,
                Anchor {
                    entry: input,
                    exit: n,
                },
            );
            n
        };
        let q = proj(g, "attention.self.query", h, h, x);
        let k = proj(g, "attention.self.key", h, h, x);
        let v = proj(g, "attention.self.value", h, h, x);
        let core = g.add(
            Node::new(
                Op::Attention {
                    heads: d.heads,
                    kv_heads: d.kv_heads,
                    head_dim: d.head_dim,
                    causal: false,
                    dropout: ATTN_DROPOUT,
                },
                format!("{p}.attention.self"),
                Some(l),
            ),
            &[q, k, v],
        );
        g.attention.push(core);
        let o = proj(g, "attention.output.dense", h, h, core);
        let od = g.add(
            Node::new(
                Op::Dropout { p: HIDDEN_DROPOUT },
                format!("{p}.attention.output.dropout"),
                Some(l),
            ),
            &[o],
        );
        g.anchors.insert(
            format!("{p}.attention"),
            Anchor {
                entry: layer_in,
                exit: od,
            },
        );
        let a1 = g.add(
            Node::new(Op::Add, format!("{p}.attention.output"), Some(l)),
            &[od, layer_in],
        );
        let n1_path = format!("{p}.attention.output.LayerNorm");
        let n1 = g.add(
            module_node(plan, Op::LayerNorm { dim: h }, &n1_path, Some(l)),
            &[a1],
        );
        g.anchors.insert(
            n1_path,
            Anchor {
                entry: a1,
                exit: n1,
            },
        );
        let up = proj(g, "intermediate.dense", h, d.intermediate, n1);
        let act = g.add(
            Node::new(Op::Act(Act::Gelu), format!("{p}.intermediate.act"), Some(l)),
            &[up],
        );
        let down = proj(g, "output.dense", d.intermediate, h, act);
        let dd = g.add(
            Node::new(
                Op::Dropout { p: HIDDEN_DROPOUT },
                format!("{p}.output.dropout"),
                Some(l),
            ),
            &[down],
        );
        g.anchors.insert(
            format!("{p}.mlp"),
            Anchor {
                entry: n1,
                exit: dd,
            },
        );
        let a2 = g.add(
            Node::new(Op::Add, format!("{p}.output"), Some(l)),
            &[dd, n1],
        );
        let n2_path = format!("{p}.output.LayerNorm");
        let n2 = g.add(
            module_node(plan, Op::LayerNorm { dim: h }, &n2_path, Some(l)),
            &[a2],
        );
        g.anchors.insert(
            n2_path,
            Anchor {
                entry: a2,
                exit: n2,
            },
        );
        g.anchors.insert(
            p,
            Anchor {
                entry: layer_in,
                exit: n2,
            },
        );
        x = n2;
    }
    g.output = x;
    if plan.task.kind == TaskKind::Classify {
        let classes = plan.task.num_labels.unwrap_or(2);
        let cls = g.add(Node::new(Op::FirstToken, "pooler", None), &[x]);
        let pd = g.add(
            module_node(
                plan,
                Op::Linear {
                    in_f: h,
                    out_f: h,
                    bias: true,
                },
                "pooler.dense",
                None,
            ),
            &[cls],
        );
        g.anchors.insert(
            "pooler.dense".into(),
            Anchor {
                entry: cls,
                exit: pd,
            },
        );
        let t = g.add(
            Node::new(Op::Act(Act::Tanh), "pooler.activation", None),
            &[pd],
        );
        let dr = g.add(
            Node::new(Op::Dropout { p: HIDDEN_DROPOUT }, "dropout", None),
            &[t],
        );
        let c = g.add(
            module_node(
                plan,
                Op::Linear {
                    in_f: h,
                    out_f: classes,
                    bias: true,
                },
                "classifier",
                None,
            ),
            &[dr],
        );
        g.anchors
            .insert("classifier".into(), Anchor { entry: dr, exit: c });
        let loss = g.add(
            Node::new(Op::Loss(LossKind::Classify { classes }), "loss", None),
            &[c],
        );
        g.output = c;
        g.loss = Some(loss);
    }
}
