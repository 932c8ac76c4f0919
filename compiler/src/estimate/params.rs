//! Parameter counts, matching Hugging Face PEFT's `print_trainable_parameters`
//! for the same configuration: the trainable task head is counted as PEFT's
//! `modules_to_save` copy (trainable, and once more in the total beside the
//! frozen original).

use crate::methods::{TensorDecl, TensorKind};
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

/// Elements of a set of declared tensors: those that train, and those saved
/// but frozen (VeRA's shared projections).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counted {
    pub trainable: u64,
    pub frozen: u64,
    /// Frozen tensors Hugging Face PEFT holds as parameters (counted in its
    /// total), not buffers.
    pub frozen_in_total: u64,
}

fn count(decls: &[TensorDecl]) -> Counted {
    let mut c = Counted::default();
    for d in decls {
        match d.kind {
            TensorKind::Trainable => c.trainable += d.numel(),
            TensorKind::Pruned { kept } => c.trainable += kept,
            TensorKind::Frozen { in_total } => {
                c.frozen += d.numel();
                if in_total {
                    c.frozen_in_total += d.numel();
                }
            }
        }
    }
    c
}

/// Elements a site declares on its own (what a statement's sites share is
/// [`shared_params`]).
pub fn site_params(plan: &Plan, s: &Site) -> Counted {
    count(&s.method.site().tensors(s, &plan.model.dims))
}

/// Elements the sites of statement `statement` share.
pub fn shared_params(plan: &Plan, statement: usize) -> Counted {
    let group: Vec<&Site> = plan
        .sites
        .iter()
        .filter(|s| s.statement == statement)
        .collect();
    match group.first() {
        Some(first) => count(&first.method.site().shared_tensors(&group, &plan.model.dims)),
        None => Counted::default(),
    }
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
    let mut frozen_in_total = 0u64;
    let mut statements: Vec<usize> = Vec::new();
    for s in &plan.sites {
        let own = site_params(plan, s);
        let n = own.trainable;
        added += n;
        frozen_in_total += own.frozen_in_total;
        *by_method.entry(s.method.name().to_string()).or_default() += n;
        *by_layer.entry(layer_key(s.layer())).or_default() += n;
        by_site.push(SiteParams {
            method: s.method.name().to_string(),
            module: s.module.clone(),
            layer: s.layer(),
            params: n,
        });
        if !statements.contains(&s.statement) {
            statements.push(s.statement);
            let shared = shared_params(plan, s.statement);
            added += shared.trainable;
            frozen_in_total += shared.frozen_in_total;
            if shared.trainable > 0 {
                *by_method.entry(s.method.name().to_string()).or_default() += shared.trainable;
                *by_layer.entry("other".into()).or_default() += shared.trainable;
            }
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
    let total = base + added + head_params + frozen_in_total;
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
