//! `peftc merge RUN|DIR --out DIR`: the base model with the adapter folded in,
//! as a full checkpoint transformers loads.

use super::output::{Kind, Staged};
use super::{CliError, plans};
use clap::Args;
use peftc_runtime::session::Session;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// A run folder or a peftc adapter folder (or an HF adapter with --spec).
    pub run: PathBuf,
    /// A new folder, or an older `peftc merge` output to replace.
    #[arg(long)]
    pub out: PathBuf,
    /// For a Hugging Face adapter folder: the spec whose model and block it belongs to.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Write into a non-empty folder peftc did not write, beside what is there
    /// (nothing there is replaced or removed).
    #[arg(long)]
    pub force: bool,
    /// Fold a `dylora` adapter at this rank (any of its trained ranks).
    #[arg(long, value_parser = super::flags::count)]
    pub rank: Option<u64>,
}

pub fn run(a: MergeArgs) -> Result<(), CliError> {
    let (mut plan, labels) = match &a.spec {
        Some(spec) => {
            let (_, plan) = plans::from_spec(spec, None, None, super::spec::Data::Estimates)?;
            let labels = plan.label_names.clone().unwrap_or_default();
            (plan, labels)
        }
        None => {
            let (meta, plan) = plans::from_run(&a.run)?;
            (plan, meta.label_names)
        }
    };
    plans::cut_rank(&mut plan, a.rank)?;
    peftc_runtime::merge::mergeable(&plan).map_err(CliError::Input)?;
    let base = plans::model_dir(&plan);
    let out = Staged::begin(&a.out, Kind::Merge, a.force, &[&a.run, &base])?;
    let session = Session::open(plan.clone())?;
    let mut store = session.init_params(0)?;
    peftc_runtime::adapter::load_into(&plan, &mut store, &a.run)?;
    let merged = peftc_runtime::merge::merged_weights(&plan, &store, session.weights)?;
    peftc_runtime::merge::write_merged(&plan, merged, &labels, out.path())?;
    out.commit()?;
    println!("wrote {}", a.out.display());
    Ok(())
}
