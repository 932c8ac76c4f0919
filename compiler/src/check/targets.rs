//! Whether a module can carry a method, and what to suggest when it cannot.

use crate::methods::TargetKind;
use crate::model::{Family, LayerRole, Module, ModuleKind, Role};

/// Whether `m` is a valid place for a method that targets `t`.
pub fn accepts(t: TargetKind, m: &Module, all: &[Module]) -> bool {
    match t {
        TargetKind::Linear => matches!(m.kind, ModuleKind::Linear { .. }),
        TargetKind::Embedding => m.role == Some(Role::Embed),
        TargetKind::Attention => matches!(m.kind, ModuleKind::Attention),
        TargetKind::Block => matches!(
            m.kind,
            ModuleKind::Linear { .. } | ModuleKind::Attention | ModuleKind::Mlp | ModuleKind::Layer
        ),
        TargetKind::Biased => !biases_under(m, all).is_empty(),
        TargetKind::Weighted => !weights_under(m, all).is_empty(),
        TargetKind::Norm => matches!(
            m.kind,
            ModuleKind::LayerNorm { .. } | ModuleKind::RmsNorm { .. }
        ),
        TargetKind::Layer => matches!(m.kind, ModuleKind::Layer),
    }
}

/// How to name a module to the user: its role when it has one, else its path.
pub fn describe(m: &Module) -> String {
    match m.role {
        Some(r) => format!("`{}` ({})", r.spelling(), m.kind.name()),
        None => format!("`{}` ({})", m.path, m.kind.name()),
    }
}

/// A hint for putting a method that targets `t` where `m` is.
pub fn hint(t: TargetKind, m: &Module, family: Family) -> Option<String> {
    let lr = m.role.and_then(Role::layer_role);
    match (t, &m.kind, lr) {
        (TargetKind::Linear, ModuleKind::Attention, _) => {
            Some("select its projections, e.g. `attn.{q, v}` or `attn.{q, k, v, o}`".into())
        }
        (TargetKind::Linear, ModuleKind::Mlp, _) => Some(match family {
            Family::Bert => "select its projections, e.g. `mlp.{up, down}`".into(),
            Family::Llama => "select its projections, e.g. `mlp.{gate, up, down}`".into(),
        }),
        (TargetKind::Linear, ModuleKind::Layer, _) => {
            Some("select projections inside the layer, e.g. `layers[*].attn.{q, v}`".into())
        }
        (
            TargetKind::Attention,
            _,
            Some(LayerRole::Mlp | LayerRole::MlpUp | LayerRole::MlpDown | LayerRole::MlpGate),
        ) => Some("prefixes extend attention's keys and values: put it on `attn`".into()),
        (TargetKind::Attention, _, _) => {
            Some("put it on an attention block, e.g. `layers[*].attn`".into())
        }
        (TargetKind::Embedding, _, _) => Some("a soft prompt goes on `embed`".into()),
        (TargetKind::Layer, _, _) => {
            Some("CoDA routes tokens around a whole layer: put it beside `layers[*]`".into())
        }
        (TargetKind::Block, _, _) => {
            Some("put adapters after or beside `attn`, `mlp`, a layer or a projection".into())
        }
        (TargetKind::Norm, _, _) => Some(match family {
            Family::Bert => "select a layer's norms: `layers[*].{attn_norm, mlp_norm}` (or \"**.LayerNorm\")".into(),
            Family::Llama => "select the norms: `layers[*].{attn_norm, mlp_norm}`, `final_norm`".into(),
        }),
        (TargetKind::Biased, _, _) => Some(match family {
            Family::Llama => "LLaMA-family layers have no biases (Qwen2 has them on q, k, v); try `ia3` or `lora`".into(),
            Family::Bert => "select modules that hold biases: projections or layer norms".into(),
        }),
        _ => None,
    }
}

/// The modules holding bias terms at or under `m` (by path), `m` included.
pub fn biases_under<'a>(m: &Module, all: &'a [Module]) -> Vec<&'a Module> {
    under(m, all, |x| x.kind.bias_len().is_some())
}

/// The modules holding weights of their own (linear layers and norms) at or
/// under `m`, `m` included, the task head excluded.
pub fn weights_under<'a>(m: &Module, all: &'a [Module]) -> Vec<&'a Module> {
    under(m, all, |x| {
        x.role != Some(Role::Head)
            && matches!(
                x.kind,
                ModuleKind::Linear { .. }
                    | ModuleKind::LayerNorm { .. }
                    | ModuleKind::RmsNorm { .. }
            )
    })
}

/// The modules at or under `m` that `keep` accepts.
fn under<'a>(m: &Module, all: &'a [Module], keep: impl Fn(&Module) -> bool) -> Vec<&'a Module> {
    let layer_roles = |x: &Module| x.role.and_then(Role::layer_role);
    all.iter()
        .filter(|x| keep(x))
        .filter(|x| {
            if x.path == m.path || x.path.starts_with(&format!("{}.", m.path)) {
                return true;
            }
            // BERT's synthetic `mlp` groups two sibling modules: its biases are
            // those of mlp.up and mlp.down of the same layer.
            m.synthetic
                && m.role.and_then(Role::layer).is_some()
                && m.role.and_then(Role::layer) == x.role.and_then(Role::layer)
                && matches!(
                    layer_roles(x),
                    Some(LayerRole::MlpUp | LayerRole::MlpDown | LayerRole::MlpGate)
                )
        })
        .collect()
}
