//! `peftc merge RUN|DIR --out DIR`: the base model with the adapter folded in,
//! as a full checkpoint transformers loads.

use super::{CliError, plans};
use clap::Args;
use peftc_runtime::session::Session;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// A run folder or a peftc adapter folder (or an HF adapter with --spec).
    pub run: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// For a Hugging Face adapter folder: the spec whose model and block it belongs to.
    #[arg(long)]
    pub spec: Option<PathBuf>,
}

pub fn run(a: MergeArgs) -> Result<(), CliError> {
    let (plan, labels) = match &a.spec {
        Some(spec) => {
            let (_, plan) = plans::from_spec(spec, None, None)?;
            let labels = plan.label_names.clone().unwrap_or_default();
            (plan, labels)
        }
        None => {
            let (meta, plan) = plans::from_run(&a.run)?;
            (plan, meta.label_names)
        }
    };
    let fail = |e: peftc_runtime::RuntimeError| CliError::Input(e.to_string());
    peftc_runtime::merge::mergeable(&plan).map_err(CliError::Input)?;
    let session = Session::open(plan.clone()).map_err(fail)?;
    let mut store = session.init_params(0).map_err(fail)?;
    peftc_runtime::adapter::load_into(&plan, &mut store, &a.run).map_err(fail)?;
    let merged =
        peftc_runtime::merge::merged_weights(&plan, &store, session.weights).map_err(fail)?;
    peftc_runtime::merge::write_merged(&plan, merged, &labels, &a.out).map_err(fail)?;
    println!("wrote {}", a.out.display());
    Ok(())
}
