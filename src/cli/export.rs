//! `peftc export RUN|DIR --format hf --out DIR`: a run's adapter in Hugging
//! Face PEFT's format (or peftc's own).

use super::output::{Kind, Staged};
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
    /// A new folder, or an older export of the same format to replace.
    #[arg(long)]
    pub out: PathBuf,
    /// Write into a non-empty folder peftc did not write, beside what is there
    /// (nothing there is replaced or removed).
    #[arg(long)]
    pub force: bool,
    /// Export a `dylora` adapter cut to this rank (a LoRA of that rank).
    #[arg(long, value_parser = super::flags::count)]
    pub rank: Option<u64>,
}

pub fn run(a: ExportArgs) -> Result<(), CliError> {
    let (meta, mut plan) = plans::from_run(&a.run)?;
    plans::cut_rank(&mut plan, a.rank)?;
    if a.rank.is_some() && a.format == Format::Peftc {
        return Err(CliError::Input(
            "`--rank` cuts the Hugging Face export; a peftc adapter keeps every rank (read it with `--rank`)".into(),
        ));
    }
    let mut store = ParamStore::default();
    for s in param_specs(&plan) {
        store.values.insert(
            s.name.clone(),
            peftc_runtime::weights::HostTensor::zeros(s.shape),
        );
    }
    peftc_runtime::adapter::load_into(&plan, &mut store, &a.run)?;
    let kind = match a.format {
        Format::Hf => Kind::ExportHf,
        Format::Peftc => Kind::ExportPeftc,
    };
    if a.format == Format::Hf {
        // Refused before anything is staged.
        peftc_runtime::adapter::hf::exportable(&plan).map_err(CliError::Input)?;
    }
    let out = Staged::begin(&a.out, kind, a.force, &[&a.run])?;
    match a.format {
        Format::Hf => {
            let base = plans::model_dir(&plan)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            peftc_runtime::adapter::hf::export(
                &plan,
                &store.values,
                &base,
                meta.steps,
                out.path(),
            )?;
        }
        Format::Peftc => peftc_runtime::adapter::native::save(out.path(), &meta, &store.values)?,
    }
    out.commit()?;
    println!("wrote {}", a.out.display());
    Ok(())
}
