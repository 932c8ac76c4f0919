//! `peftc export RUN|DIR --format hf --out DIR`: a run's adapter in Hugging
//! Face PEFT's format (or peftc's own).

use super::{CliError, plans};
use clap::{Args, ValueEnum};
use peftc_runtime::model::{ParamStore, param_specs};
use std::path::PathBuf;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// adapter_config.json + adapter_model.safetensors, for PeftModel.from_pretrained.
    Hf,
    /// peftc's own adapter.json + adapter.safetensors (any method).
    Peftc,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A run folder or a peftc adapter folder.
    pub run: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Hf)]
    pub format: Format,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: ExportArgs) -> Result<(), CliError> {
    let (meta, plan) = plans::from_run(&a.run)?;
    let fail = |e: peftc_runtime::RuntimeError| CliError::Input(e.to_string());
    let mut store = ParamStore::default();
    for s in param_specs(&plan) {
        store.values.insert(
            s.name.clone(),
            peftc_runtime::weights::HostTensor::zeros(s.shape),
        );
    }
    peftc_runtime::adapter::load_into(&plan, &mut store, &a.run).map_err(fail)?;
    match a.format {
        Format::Hf => {
            let base = match &plan.model.source {
                peftc_compiler::model::ModelSource::ConfigJson(p)
                | peftc_compiler::model::ModelSource::Gguf(p) => p
                    .parent()
                    .and_then(|d| d.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            peftc_runtime::adapter::hf::export(&plan, &store.values, &base, &a.out)
                .map_err(fail)?;
        }
        Format::Peftc => {
            peftc_runtime::adapter::native::save(&a.out, &meta, &store.values).map_err(fail)?
        }
    }
    println!("wrote {}", a.out.display());
    Ok(())
}
