//! Full fine-tuning of chosen modules (HF PEFT's `modules_to_save`; the
//! survey's Xattn tuning is `full() on layers[*].attn`): every weight and
//! bias of every linear layer and norm at or under each target trains,
//! starting from the pretrained values. A statement's sites are those
//! leaves ([`Full::leaves`]), so a block target trains each of its parts.

use super::method::{Capabilities, Lowering, SiteMethod, Wiring};
use super::spec::{ENABLED, MethodSpec, ON, TargetKind, enabled, no_check, no_target_check};
use super::table::{MethodConfig, MethodKind};
use super::tensors::{Init, TensorDecl, site_name};
use crate::ir::Op;
use crate::model::{Dims, Module, ModuleKind};
use crate::plan::Site;

pub const SPEC: MethodSpec = MethodSpec {
    kind: MethodKind::Full,
    name: "full",
    placements: ON,
    target: TargetKind::Weighted,
    args: &[ENABLED],
    gateable: false,
    doc: "train every weight and bias of the selected modules (HF's modules_to_save)",
    placement_note: "`full` retrains the module itself",
    exclusive: "full fine-tuning",
    single_target: false,
    scales_ffn_input: false,
    once_per_block: None,
    configure: |args, _| enabled(args).then_some(MethodConfig::Full),
    check: no_check,
    check_targets: no_target_check,
};

/// `full` has no arguments beyond `enabled`.
pub struct Full;

impl Full {
    /// The linear layers and norms at or under `targets`, each once, in
    /// model order.
    pub fn leaves<'a>(targets: &[&Module], all: &'a [Module]) -> Vec<&'a Module> {
        let mut out: Vec<&Module> = Vec::new();
        for t in targets {
            for m in crate::check::weights_under(t, all) {
                if !out.iter().any(|o| o.path == m.path) {
                    out.push(m);
                }
            }
        }
        out.sort_by_key(|m| all.iter().position(|x| x.path == m.path));
        out
    }

    /// The trained copies' names at `site`: the module's own weight, and its
    /// bias when it has one.
    pub fn names(site: &Site) -> (String, Option<String>) {
        let has_bias = match site.kind {
            ModuleKind::Linear { bias, .. } => bias,
            ModuleKind::LayerNorm { .. } => true,
            ModuleKind::RmsNorm { .. }
            | ModuleKind::Embedding { .. }
            | ModuleKind::Attention
            | ModuleKind::Mlp
            | ModuleKind::Layer
            | ModuleKind::Container => false,
        };
        (
            site_name(&site.module, "weight"),
            has_bias.then(|| site_name(&site.module, "bias")),
        )
    }
}

impl SiteMethod for Full {
    fn name(&self) -> &'static str {
        "full"
    }

    /// The module's own tensors under their checkpoint names, copied from
    /// the base.
    fn tensors(&self, site: &Site, _: &Dims) -> Vec<TensorDecl> {
        let (w, b) = Full::names(site);
        let shape = match site.kind {
            ModuleKind::Linear {
                in_features,
                out_features,
                ..
            } => vec![out_features, in_features],
            _ => vec![site.out_dim],
        };
        let mut out = vec![TensorDecl::trainable(w.clone(), shape, Init::FromBase(w))];
        if let Some(b) = b {
            out.push(TensorDecl::trainable(
                b.clone(),
                vec![site.out_dim],
                Init::FromBase(b),
            ));
        }
        out
    }

    fn lowering(&self, _: &Site, _: &Dims) -> Option<Lowering> {
        Some(Lowering {
            op: Op::Add, // unused: `Own` adds no node
            wiring: Wiring::Own,
        })
    }

    fn capabilities(&self, _: &Site) -> Capabilities {
        Capabilities {
            merge: true,
            hf: false,
            routable: false,
        }
    }
}
