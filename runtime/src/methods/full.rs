//! Full fine-tuning at run time: the linear layer or norm reads its trained
//! copy ([`super::tuned`] names it); merging puts the copy in place.

use crate::error::Result;
use crate::model::ParamStore;
use crate::weights::HostTensor;
use peftc_compiler::methods::Full;
use peftc_compiler::plan::Site;

/// The copies replace the module's weight and bias.
pub fn merge(
    site: &Site,
    w: &mut HostTensor,
    bias: Option<&mut HostTensor>,
    store: &ParamStore,
) -> Result<()> {
    let (wn, bn) = Full::names(site);
    *w = super::trained(store, &wn)?.clone();
    if let (Some(bn), Some(b)) = (bn, bias) {
        *b = super::trained(store, &bn)?.clone();
    }
    Ok(())
}
