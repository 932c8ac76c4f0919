//! Parameter counts, matching Hugging Face PEFT's `print_trainable_parameters`
//! for the same configuration: the trainable task head is counted as PEFT's
//! `modules_to_save` copy (trainable, and once more in the total beside the
//! frozen original).

use crate::methods::MethodConfig;
use crate::model::Role;
use crate::plan::{Plan, Site};
use crate::task::TaskKind;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteParams {
    pub method: String,
    pub module: String,
    pub layer: Option<usize>,
    pub params: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamReport {
    /// Base model plus task head, tied weights once.
    pub base_params: u64,
    /// Parameters the methods add.
    pub added_params: u64,
    /// Existing bias terms made trainable (BitFit, LoRA `bias=`).
    pub bias_params: u64,
    /// The task head, trained in full (classification).
    pub head_params: u64,
    /// Hugging Face PEFT's trainable count: added + biases + head.
    pub trainable_params: u64,
    /// Hugging Face PEFT's total: base + added + the head's trainable copy.
    pub total_params: u64,
    pub trainable_percent: f64,
    pub by_method: BTreeMap<String, u64>,
    /// Added parameters per layer; `None` collects those outside layers.
    pub by_layer: BTreeMap<String, u64>,
    pub by_site: Vec<SiteParams>,
}

/// Parameters a site adds on its own (shared state, such as a prefix
/// projection MLP, is counted per statement by [`params`]).
pub fn site_params(plan: &Plan, s: &Site) -> u64 {
    let d = &plan.model.dims;
    let gate = |width: usize| if s.gated { width as u64 + 1 } else { 0 };
    let (i, o) = (s.in_dim as u64, s.out_dim as u64);
    match &s.method {
        MethodConfig::Lora(l) => l.r as u64 * (i + o) + if l.dora { o } else { 0 } + gate(s.in_dim),
        MethodConfig::Ia3 => {
            if s.feedforward {
                i
            } else {
                o
            }
        }
        MethodConfig::Prompt(p) => (p.len * d.hidden) as u64,
        MethodConfig::Prefix(p) => {
            let kv = (d.kv_heads * d.head_dim) as u64;
            let own = if p.projection == 0 {
                p.len as u64 * 2 * kv
            } else {
                0
            };
            own + gate(d.hidden)
        }
        MethodConfig::Adapter(a) => {
            let b = a.bottleneck as u64;
            // Serial: d_out -> b -> d_out. Parallel: d_in -> b -> d_out.
            let input = if a.parallel { i } else { o };
            input * b + b + b * o + o + gate(if a.parallel { s.in_dim } else { s.out_dim })
        }
        MethodConfig::Bitfit => 0,
    }
}

/// Parameters of a prefix projection shared by the `layers` sites of one
/// statement: embedding [len, kv], Linear(kv, p), Tanh, Linear(p, layers*2*kv).
fn prefix_projection(plan: &Plan, len: usize, p: usize, layers: usize) -> u64 {
    let d = &plan.model.dims;
    let kv = (d.kv_heads * d.head_dim) as u64;
    let (len, p, layers) = (len as u64, p as u64, layers as u64);
    len * kv + kv * p + p + p * layers * 2 * kv + layers * 2 * kv
}

pub fn params(plan: &Plan) -> ParamReport {
    let base: u64 = plan.modules.iter().map(|m| m.counted_params()).sum();
    let mut by_method: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_layer: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_site = Vec::with_capacity(plan.sites.len());
    let mut added = 0u64;
    let layer_key = |l: Option<usize>| {
        l.map(|l| format!("{l:03}"))
            .unwrap_or_else(|| "other".into())
    };
    for s in &plan.sites {
        let n = site_params(plan, s);
        added += n;
        *by_method.entry(s.method.name().to_string()).or_default() += n;
        *by_layer.entry(layer_key(s.layer())).or_default() += n;
        by_site.push(SiteParams {
            method: s.method.name().to_string(),
            module: s.module.clone(),
            layer: s.layer(),
            params: n,
        });
    }
    // Shared prefix projections, once per statement.
    let mut seen = Vec::new();
    for s in &plan.sites {
        if let MethodConfig::Prefix(p) = &s.method
            && p.projection > 0
            && !seen.contains(&s.statement)
        {
            seen.push(s.statement);
            let layers = plan
                .sites
                .iter()
                .filter(|t| t.statement == s.statement)
                .count();
            let n = prefix_projection(plan, p.len, p.projection, layers);
            added += n;
            *by_method.entry("prefix".into()).or_default() += n;
            *by_layer.entry("other".into()).or_default() += n;
        }
    }
    let bias_params: u64 = plan
        .trainable_biases
        .iter()
        .filter_map(|p| plan.modules.iter().find(|m| &m.path == p))
        .filter_map(|m| m.kind.bias_len())
        .map(|n| n as u64)
        .sum();
    let head_params: u64 = if plan.task.kind == TaskKind::Classify {
        plan.modules
            .iter()
            .filter(|m| m.role == Some(Role::Head))
            .map(|m| m.kind.own_params())
            .sum()
    } else {
        0
    };
    if bias_params > 0 {
        *by_method.entry("bias".into()).or_default() += bias_params;
    }
    if head_params > 0 {
        *by_method.entry("head".into()).or_default() += head_params;
    }
    let trainable = added + bias_params + head_params;
    let total = base + added + head_params;
    ParamReport {
        base_params: base,
        added_params: added,
        bias_params,
        head_params,
        trainable_params: trainable,
        total_params: total,
        trainable_percent: if total == 0 {
            0.0
        } else {
            100.0 * trainable as f64 / total as f64
        },
        by_method,
        by_layer,
        by_site,
    }
}
