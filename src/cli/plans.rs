//! Getting a plan: from a spec file (and a block), or from a run / adapter
//! folder that recorded the spec it was trained with.

use super::{CliError, spec};
use peftc_compiler::{CheckOptions, Plan, check, lower};
use peftc_runtime::adapter::native::{self, AdapterMeta};
use std::path::{Path, PathBuf};

pub fn from_spec(
    spec_path: &Path,
    block: Option<&str>,
    model: Option<PathBuf>,
    data: spec::Data,
) -> Result<(spec::LoadedSpec, Plan), CliError> {
    let s = spec::load(spec_path, model, data)?;
    let c = &s.checked;
    let b = match block {
        Some(name) => c.block(name).ok_or_else(|| {
            let names: Vec<&str> = c.blocks.iter().map(|b| b.name.as_str()).collect();
            CliError::Input(format!(
                "no peft block `{name}` in `{}`; blocks: {}",
                s.path,
                names.join(", ")
            ))
        })?,
        None => c.default_block().map_err(|d| s.fail(d))?,
    };
    let plan = lower(c, b, None).map_err(|d| s.fail(d))?;
    Ok((s, plan))
}

/// Cuts the plan's DyLoRA to `--rank K`, when given.
pub fn cut_rank(plan: &mut Plan, rank: Option<u64>) -> Result<(), CliError> {
    match rank {
        Some(k) => peftc_compiler::methods::cut_dylora(plan, k as usize).map_err(CliError::Input),
        None => Ok(()),
    }
}

/// The adapter description of a run folder or a peftc adapter folder.
pub fn meta_of(path: &Path) -> Result<AdapterMeta, CliError> {
    let dir = if native::is_native(path) {
        path.to_path_buf()
    } else {
        path.join("adapter")
    };
    let (meta, _) = native::load(&dir)?;
    Ok(meta)
}

/// The plan a run was trained with, rebuilt from the spec it recorded.
pub fn from_run(path: &Path) -> Result<(AdapterMeta, Plan), CliError> {
    let meta = meta_of(path)?;
    let file = peftc_grammar::parse(&meta.spec).map_err(|d| CliError::Spec {
        path: format!("{} (recorded spec)", path.display()),
        source: meta.spec.clone(),
        diagnostics: vec![d],
    })?;
    let opts = CheckOptions {
        spec_dir: PathBuf::from(&meta.spec_dir),
        model_override: None,
        // Exporting or merging a run needs its adapter, not its data.
        lenient_data: true,
    };
    let checked = check(&file, &opts).map_err(|diagnostics| CliError::Spec {
        path: format!("{} (recorded spec)", path.display()),
        source: meta.spec.clone(),
        diagnostics,
    })?;
    let block = checked.block(&meta.block).ok_or_else(|| {
        CliError::Input(format!("the recorded spec has no block `{}`", meta.block))
    })?;
    let plan = lower(&checked, block, None).map_err(|d| CliError::Input(d.message))?;
    Ok((meta, plan))
}

/// The folder the plan's model lives in (a checkpoint folder, or the folder
/// of a `.gguf` / `config.json`).
pub fn model_dir(plan: &Plan) -> PathBuf {
    match &plan.model.source {
        peftc_compiler::model::ModelSource::ConfigJson(p)
        | peftc_compiler::model::ModelSource::Gguf(p) => {
            p.parent().map(Path::to_path_buf).unwrap_or_default()
        }
    }
}
