//! `peftc compile SPEC`: lower a block to the IR and report parameters,
//! memory and FLOPs per step.

use super::format::{bytes, flops, thousands};
use super::{CliError, spec};
use clap::{Args, ValueEnum};
use peftc_compiler::estimate::Workload;
use peftc_compiler::train::{DType, OptimizerKind};
use peftc_compiler::{CompileOutput, compile_block};
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CompileArgs {
    pub spec: PathBuf,
    /// The peft block to compile (default: the train block's, or the only one).
    #[arg(long)]
    pub block: Option<String>,
    /// Sequences per step (default: the train block's, else 8).
    #[arg(long, value_parser = super::flags::count_to(peftc_compiler::train::MAX_BATCH as u64))]
    pub batch: Option<u64>,
    /// Tokens per sequence (default: the train block's seq_len, else 128).
    #[arg(long, value_parser = super::flags::count_to(peftc_compiler::train::MAX_SEQ as u64))]
    pub seq: Option<u64>,
    #[arg(long, value_enum)]
    pub dtype: Option<DTypeArg>,
    #[arg(long, value_enum, default_value_t = Emit::Summary)]
    pub emit: Emit,
    /// Use this model instead of the spec's.
    #[arg(long)]
    pub model: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    Summary,
    Json,
    Dot,
    Ir,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DTypeArg {
    F32,
    Bf16,
}

pub fn run(args: CompileArgs) -> Result<(), CliError> {
    let spec = spec::load(&args.spec, args.model.clone(), spec::Data::Estimates)?;
    let c = &spec.checked;
    let block = match &args.block {
        Some(name) => c.block(name).ok_or_else(|| {
            let names: Vec<&str> = c.blocks.iter().map(|b| b.name.as_str()).collect();
            let hint = peftc_grammar::suggest::did_you_mean(name, names.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            CliError::Input(format!(
                "no peft block `{name}` in `{}`{hint}; blocks: {}",
                spec.path,
                names.join(", ")
            ))
        })?,
        None => c.default_block().map_err(|d| spec.fail(d))?,
    };
    let train = c
        .train
        .as_ref()
        .map(|t| peftc_compiler::train::TrainConfig::from_args(&t.args, &c.spec_dir));
    let workload = Workload {
        batch: args
            .batch
            .or(train.as_ref().map(|t| t.batch as u64))
            .unwrap_or(8),
        seq: args
            .seq
            .or(train.as_ref().map(|t| t.seq_len as u64))
            .unwrap_or(128),
        dtype: match args.dtype {
            Some(DTypeArg::Bf16) => DType::Bf16,
            Some(DTypeArg::F32) => DType::F32,
            None => train.as_ref().map(|t| t.dtype).unwrap_or(DType::F32),
        },
        optimizer: train
            .as_ref()
            .map(|t| t.optimizer)
            .unwrap_or(OptimizerKind::Adamw),
    };
    let out = compile_block(c, block, None, workload).map_err(|d| spec.fail(d))?;
    let room = out.plan.text_positions();
    if workload.seq as usize > room {
        return Err(CliError::Input(format!(
            "--seq {} does not fit the model: {} has {} positions{}, so sequences hold at most {room} tokens",
            workload.seq,
            out.plan.model.model_type,
            out.plan.model.dims.max_positions,
            if room < out.plan.model.dims.max_positions {
                " and the soft prompt takes the rest"
            } else {
                ""
            }
        )));
    }
    match args.emit {
        Emit::Json => {
            let text = serde_json::to_string_pretty(&to_json(&spec, &out))
                .map_err(|e| CliError::Internal(format!("cannot serialize the report: {e}")))?;
            println!("{text}");
        }
        Emit::Ir => print!("{}", peftc_compiler::ir::to_text(&out.graph)),
        Emit::Dot => print!("{}", peftc_compiler::ir::to_dot(&out.graph)),
        Emit::Summary => print_summary(&spec, &out),
    }
    Ok(())
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::Bf16 => "bf16",
    }
}

pub fn to_json(spec: &spec::LoadedSpec, out: &CompileOutput) -> serde_json::Value {
    let c = &spec.checked;
    let m = &c.model;
    let p = &out.params;
    let mem = &out.memory;
    let w = &out.workload;
    let peft_nodes = out
        .graph
        .g
        .node_weights()
        .filter(|n| n.op.is_peft())
        .count();
    json!({
        "spec": spec.path,
        "block": out.plan.block,
        "model": {
            "model_type": m.model_type,
            "family": m.family,
            "source": m.source,
            "layers": m.dims.layers,
            "hidden": m.dims.hidden,
            "heads": m.dims.heads,
            "kv_heads": m.dims.kv_heads,
            "intermediate": m.dims.intermediate,
            "vocab": m.dims.vocab,
            "tied_embeddings": m.dims.tied_embeddings,
            "weights": m.weights,
        },
        "task": c.task,
        "total_params": p.total_params,
        "trainable_params": p.trainable_params,
        "trainable_percent": p.trainable_percent,
        "params": {
            "base": p.base_params,
            "added": p.added_params,
            "biases": p.bias_params,
            "head": p.head_params,
            "by_method": p.by_method,
            "by_layer": p.by_layer,
        },
        "sites": p.by_site,
        "workload": {
            "batch": w.batch,
            "seq": w.seq,
            "dtype": dtype_name(w.dtype),
            "optimizer": w.optimizer,
        },
        "memory_bytes": mem,
        "flops_per_step": out.flops.per_step,
        "flops": out.flops,
        "ir": {
            "nodes": out.graph.len(),
            "peft_nodes": peft_nodes,
            "fused": fused_counts(&out.graph),
        },
    })
}

/// Fused kernels by rule name.
fn fused_counts(g: &peftc_compiler::ir::Graph) -> std::collections::BTreeMap<&'static str, usize> {
    let mut m = std::collections::BTreeMap::new();
    for f in &g.fusions {
        *m.entry(f.op.name()).or_default() += 1;
    }
    m
}

fn print_summary(spec: &spec::LoadedSpec, out: &CompileOutput) {
    let c = &spec.checked;
    let p = &out.params;
    let m = &out.memory;
    let w = &out.workload;
    println!("{}", super::check::describe_model(c));
    match c.task.num_labels {
        Some(n) => println!("task   {} ({n} labels)", c.task.kind.name()),
        None => println!("task   {}", c.task.kind.name()),
    }
    println!("block  {}: {} sites", out.plan.block, out.plan.sites.len());
    println!();
    println!(
        "params {} trainable of {} total ({:.4}%)",
        thousands(p.trainable_params),
        thousands(p.total_params),
        p.trainable_percent
    );
    for (method, n) in &p.by_method {
        println!("  {method:<14}{:>16}", thousands(*n));
    }
    if p.by_layer.len() > 1 {
        println!("  per layer:");
        for (layer, n) in &p.by_layer {
            let name = layer.trim_start_matches('0');
            let name = if name.is_empty() && layer != "other" {
                "0"
            } else if layer == "other" {
                "other"
            } else {
                name
            };
            println!("    {name:<12}{:>16}", thousands(*n));
        }
    }
    println!();
    println!(
        "memory per training step (batch {} x seq {}, {}, {:?}):",
        w.batch,
        w.seq,
        dtype_name(w.dtype),
        w.optimizer
    );
    for (name, v) in [
        ("frozen weights", m.frozen_weights),
        ("trainable weights", m.trainable_weights),
        ("gradients", m.gradients),
        ("optimizer state", m.optimizer_state),
        ("activations", m.activations),
        ("workspace", m.workspace),
        ("runtime", m.runtime_overhead),
        // Only masks chosen by a dense phase before training have one.
        ("selection phase", m.selection),
        ("peak", m.peak),
    ] {
        if name == "selection phase" && v == 0 {
            continue;
        }
        match (&m.packed, name) {
            (Some(p), "frozen weights") => println!(
                "  {name:<18}{:>14}  ({} of them in {} blocks, kept packed)",
                bytes(v),
                bytes(p.bytes),
                p.format
            ),
            _ => println!("  {name:<18}{:>14}", bytes(v)),
        }
    }
    println!();
    println!(
        "flops  {} per step (forward {}, backward {})",
        flops(out.flops.per_step),
        flops(out.flops.forward),
        flops(out.flops.backward)
    );
}
