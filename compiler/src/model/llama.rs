//! The module tree of a LLaMA-family decoder (`LlamaForCausalLM` names:
//! `model.layers.N.self_attn.q_proj`, ..., `lm_head`). Mistral and Qwen2 share
//! it; Qwen2 adds biases to q, k and v.

use super::config::{ConfigError, HfConfig};
use super::{Dims, LayerRole, Module, ModuleKind, Role};

pub(super) fn dims(cfg: &HfConfig, model_type: &str) -> Result<Dims, ConfigError> {
    let hidden = cfg.dim("hidden_size")?;
    let heads = cfg.dim("num_attention_heads")?;
    let kv_heads = cfg.usize_opt("num_key_value_heads")?.unwrap_or(heads);
    let head_dim = match cfg.usize_opt("head_dim")? {
        Some(d) => d,
        None => cfg.head_dim(hidden, heads)?,
    };
    let attention_bias = cfg.bool_opt("attention_bias")?.unwrap_or(false);
    Ok(Dims {
        family: super::Family::Llama,
        hidden,
        layers: cfg.dim("num_hidden_layers")?,
        heads,
        kv_heads,
        head_dim,
        intermediate: cfg.dim("intermediate_size")?,
        vocab: cfg.dim("vocab_size")?,
        max_positions: cfg.usize_opt("max_position_embeddings")?.unwrap_or(2048),
        type_vocab: 0,
        norm_eps: cfg.f64_opt("rms_norm_eps")?.unwrap_or(1e-6),
        rope_theta: cfg.rope_theta()?.unwrap_or(10000.0),
        tied_embeddings: cfg.bool_opt("tie_word_embeddings")?.unwrap_or(false),
        qkv_bias: attention_bias || model_type == "qwen2",
        o_bias: attention_bias,
        mlp_bias: cfg.bool_opt("mlp_bias")?.unwrap_or(false),
        act: cfg.str_opt("hidden_act")?.unwrap_or("silu").to_string(),
    })
}

pub(super) fn modules(d: &Dims) -> Vec<Module> {
    let h = d.hidden;
    let q_out = d.heads * d.head_dim;
    let kv_out = d.kv_heads * d.head_dim;
    let mut out = Vec::with_capacity(4 + d.layers * 12);
    let mut push = |path: String, kind: ModuleKind, role: Option<Role>| {
        out.push(Module {
            path,
            kind,
            role,
            synthetic: false,
            tied: false,
        })
    };
    let linear = |i: usize, o: usize, bias: bool| ModuleKind::Linear {
        in_features: i,
        out_features: o,
        bias,
    };
    push("model".into(), ModuleKind::Container, None);
    push(
        "model.embed_tokens".into(),
        ModuleKind::Embedding {
            num: d.vocab,
            dim: h,
        },
        Some(Role::Embed),
    );
    for i in 0..d.layers {
        let p = format!("model.layers.{i}");
        let r = |lr| Some(Role::InLayer(i, lr));
        push(p.clone(), ModuleKind::Layer, r(LayerRole::Layer));
        push(
            format!("{p}.self_attn"),
            ModuleKind::Attention,
            r(LayerRole::Attn),
        );
        push(
            format!("{p}.self_attn.q_proj"),
            linear(h, q_out, d.qkv_bias),
            r(LayerRole::AttnQ),
        );
        push(
            format!("{p}.self_attn.k_proj"),
            linear(h, kv_out, d.qkv_bias),
            r(LayerRole::AttnK),
        );
        push(
            format!("{p}.self_attn.v_proj"),
            linear(h, kv_out, d.qkv_bias),
            r(LayerRole::AttnV),
        );
        push(
            format!("{p}.self_attn.o_proj"),
            linear(q_out, h, d.o_bias),
            r(LayerRole::AttnO),
        );
        push(format!("{p}.mlp"), ModuleKind::Mlp, r(LayerRole::Mlp));
        let inter = d.intermediate;
        push(
            format!("{p}.mlp.gate_proj"),
            linear(h, inter, d.mlp_bias),
            r(LayerRole::MlpGate),
        );
        push(
            format!("{p}.mlp.up_proj"),
            linear(h, inter, d.mlp_bias),
            r(LayerRole::MlpUp),
        );
        push(
            format!("{p}.mlp.down_proj"),
            linear(inter, h, d.mlp_bias),
            r(LayerRole::MlpDown),
        );
        push(
            format!("{p}.input_layernorm"),
            ModuleKind::RmsNorm { dim: h },
            r(LayerRole::AttnNorm),
        );
        push(
            format!("{p}.post_attention_layernorm"),
            ModuleKind::RmsNorm { dim: h },
            r(LayerRole::MlpNorm),
        );
    }
    push(
        "model.norm".into(),
        ModuleKind::RmsNorm { dim: h },
        Some(Role::FinalNorm),
    );
    out
}
