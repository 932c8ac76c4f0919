//! Static estimates of a plan: parameters (as Hugging Face PEFT counts them),
//! training memory per component, and FLOPs per step.

mod flops;
mod memory;
mod params;

pub use flops::{FlopReport, flops_per_step};
pub use memory::{
    HEAD_CHUNK_BYTES, MemoryReport, Overflow, PackedBase, Workload, head_chunk_rows, memory,
};
pub use params::{Counted, ParamReport, SiteParams, params, shared_params, site_params};
