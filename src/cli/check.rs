//! `peftc check SPEC`: validate a spec against its model and say what each
//! block does, in milliseconds, reading no weights.

use super::format::thousands;
use super::{CliError, spec};
use peftc_compiler::Checked;
use peftc_compiler::check::CheckedBlock;
use peftc_compiler::estimate::params;
use peftc_compiler::model::{Module, Role};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn run(spec_path: &Path, model: Option<PathBuf>) -> Result<(), CliError> {
    let spec = spec::load(spec_path, model, spec::Data::Reads)?;
    let c = &spec.checked;
    println!("ok: {}", spec.path);
    println!("{}", describe_model(c));
    match c.task.num_labels {
        Some(n) => println!("task   {} ({n} labels)", c.task.kind.name()),
        None => println!("task   {}", c.task.kind.name()),
    }
    for b in &c.blocks {
        print_block(c, b);
    }
    for (s, space) in &c.searches {
        println!("search {} explores `{space}`", s.name);
    }
    Ok(())
}

pub fn describe_model(c: &Checked) -> String {
    let m = &c.model;
    let d = &m.dims;
    let src = match &m.source {
        peftc_compiler::model::ModelSource::ConfigJson(p)
        | peftc_compiler::model::ModelSource::Gguf(p) => p.display().to_string(),
    };
    let gqa = if d.kv_heads != d.heads {
        format!(" ({} kv)", d.kv_heads)
    } else {
        String::new()
    };
    format!(
        "model  {} from {src}: {} layers, hidden {}, {} heads{gqa}, {} params ({})",
        m.model_type,
        d.layers,
        d.hidden,
        d.heads,
        thousands(m.base_params()),
        m.weights.dtype
    )
}

fn print_block(c: &Checked, b: &CheckedBlock) {
    if b.is_space() {
        let dims: usize = b
            .statements
            .iter()
            .map(|s| {
                s.args
                    .values
                    .iter()
                    .filter(|(_, v)| !matches!(v, peftc_compiler::methods::ArgValue::Fixed { .. }))
                    .count()
            })
            .sum();
        println!("block  {}: search space with {dims} dimensions", b.name);
    } else {
        match peftc_compiler::lower(c, b, None) {
            Ok(plan) => {
                let p = params(&plan);
                println!(
                    "block  {}: {} trainable of {} ({:.4}%)",
                    b.name,
                    thousands(p.trainable_params),
                    thousands(p.total_params),
                    p.trainable_percent
                );
            }
            Err(_) => println!("block  {}", b.name),
        }
    }
    for st in &b.statements {
        let name = format!("{:?}", st.kind).to_lowercase();
        let verb = st.placement.keyword();
        let gated = if st.gated { " gated" } else { "" };
        println!(
            "  {name} {verb} {}{gated}",
            summarize_targets(&c.modules, &st.targets)
        );
    }
}

/// "attn.q, attn.v in layers 0-5" for role targets; module paths otherwise.
pub fn summarize_targets(modules: &[Module], targets: &[usize]) -> String {
    let mut by_role: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut others: Vec<String> = Vec::new();
    for &t in targets {
        let m = &modules[t];
        match m.role {
            Some(Role::InLayer(l, lr)) => by_role
                .entry(lr.spelling().to_string())
                .or_default()
                .push(l),
            Some(r) => others.push(r.spelling()),
            None => others.push(m.path.clone()),
        }
    }
    // Group roles that cover the same layers.
    let mut groups: BTreeMap<Vec<usize>, Vec<String>> = BTreeMap::new();
    for (role, layers) in by_role {
        groups.entry(layers).or_default().push(role);
    }
    let mut parts: Vec<String> = groups
        .into_iter()
        .map(|(layers, roles)| format!("{} in {}", roles.join(", "), layer_list(&layers)))
        .collect();
    parts.extend(others);
    format!("{} ({} modules)", parts.join("; "), targets.len())
}

fn layer_list(layers: &[usize]) -> String {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &l in layers {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == l => *end = l,
            _ => runs.push((l, l)),
        }
    }
    let text: Vec<String> = runs
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    let word = if layers.len() == 1 { "layer" } else { "layers" };
    format!("{word} {}", text.join(", "))
}
