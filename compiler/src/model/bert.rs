//! The module tree of a BERT-family encoder (`BertModel` names, without the
//! `bert.` prefix that task models add).

use super::config::{ConfigError, HfConfig};
use super::{Dims, LayerRole, Module, ModuleKind, Role};

pub(super) fn dims(cfg: &HfConfig) -> Result<Dims, ConfigError> {
    let hidden = cfg.dim("hidden_size")?;
    let heads = cfg.dim("num_attention_heads")?;
    Ok(Dims {
        family: super::Family::Bert,
        hidden,
        layers: cfg.dim("num_hidden_layers")?,
        heads,
        kv_heads: heads,
        head_dim: cfg.head_dim(hidden, heads)?,
        intermediate: cfg.dim("intermediate_size")?,
        vocab: cfg.dim("vocab_size")?,
        max_positions: cfg.usize_opt("max_position_embeddings")?.unwrap_or(512),
        type_vocab: cfg.usize_opt("type_vocab_size")?.unwrap_or(2),
        norm_eps: cfg.f64_opt("layer_norm_eps")?.unwrap_or(1e-12),
        rope_theta: 0.0,
        tied_embeddings: false,
        qkv_bias: true,
        o_bias: true,
        mlp_bias: true,
        act: cfg.str_opt("hidden_act")?.unwrap_or("gelu").to_string(),
    })
}

pub(super) fn modules(d: &Dims) -> Vec<Module> {
    let h = d.hidden;
    let mut out = Vec::with_capacity(8 + d.layers * 14);
    let mut push = |path: String, kind: ModuleKind, role: Option<Role>, synthetic: bool| {
        out.push(Module {
            path,
            kind,
            role,
            synthetic,
            tied: false,
        })
    };
    let linear = |i: usize, o: usize| ModuleKind::Linear {
        in_features: i,
        out_features: o,
        bias: true,
    };
    push("embeddings".into(), ModuleKind::Container, None, false);
    push(
        "embeddings.word_embeddings".into(),
        ModuleKind::Embedding {
            num: d.vocab,
            dim: h,
        },
        Some(Role::Embed),
        false,
    );
    push(
        "embeddings.position_embeddings".into(),
        ModuleKind::Embedding {
            num: d.max_positions,
            dim: h,
        },
        None,
        false,
    );
    push(
        "embeddings.token_type_embeddings".into(),
        ModuleKind::Embedding {
            num: d.type_vocab,
            dim: h,
        },
        None,
        false,
    );
    push(
        "embeddings.LayerNorm".into(),
        ModuleKind::LayerNorm { dim: h },
        None,
        false,
    );
    push("encoder".into(), ModuleKind::Container, None, false);
    for i in 0..d.layers {
        let p = format!("encoder.layer.{i}");
        let r = |lr| Some(Role::InLayer(i, lr));
        push(p.clone(), ModuleKind::Layer, r(LayerRole::Layer), false);
        push(
            format!("{p}.attention"),
            ModuleKind::Attention,
            r(LayerRole::Attn),
            false,
        );
        push(
            format!("{p}.attention.self"),
            ModuleKind::Container,
            None,
            false,
        );
        push(
            format!("{p}.attention.self.query"),
            linear(h, h),
            r(LayerRole::AttnQ),
            false,
        );
        push(
            format!("{p}.attention.self.key"),
            linear(h, h),
            r(LayerRole::AttnK),
            false,
        );
        push(
            format!("{p}.attention.self.value"),
            linear(h, h),
            r(LayerRole::AttnV),
            false,
        );
        push(
            format!("{p}.attention.output"),
            ModuleKind::Container,
            None,
            false,
        );
        push(
            format!("{p}.attention.output.dense"),
            linear(h, h),
            r(LayerRole::AttnO),
            false,
        );
        push(
            format!("{p}.attention.output.LayerNorm"),
            ModuleKind::LayerNorm { dim: h },
            r(LayerRole::AttnNorm),
            false,
        );
        // BERT's feed-forward is two sibling modules; peftc names the pair `mlp`.
        push(format!("{p}.mlp"), ModuleKind::Mlp, r(LayerRole::Mlp), true);
        push(
            format!("{p}.intermediate"),
            ModuleKind::Container,
            None,
            false,
        );
        push(
            format!("{p}.intermediate.dense"),
            linear(h, d.intermediate),
            r(LayerRole::MlpUp),
            false,
        );
        push(format!("{p}.output"), ModuleKind::Container, None, false);
        push(
            format!("{p}.output.dense"),
            linear(d.intermediate, h),
            r(LayerRole::MlpDown),
            false,
        );
        push(
            format!("{p}.output.LayerNorm"),
            ModuleKind::LayerNorm { dim: h },
            r(LayerRole::MlpNorm),
            false,
        );
    }
    push("pooler".into(), ModuleKind::Container, None, false);
    push("pooler.dense".into(), linear(h, h), None, false);
    out
}
