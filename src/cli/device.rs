//! `--device`: which burn backend runs the model.

use clap::ValueEnum;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceArg {
    /// burn's Flex backend on the CPU (multi-threaded, SIMD).
    #[default]
    Cpu,
    /// burn's wgpu backend (Vulkan, Metal, DX12; lavapipe on CPU-only machines).
    Wgpu,
    /// burn-cuda (build with `--features cuda`).
    #[cfg(feature = "cuda")]
    Cuda,
}

pub type Wgpu = peftc_runtime::burn::backend::Wgpu;
pub type WgpuTrain = peftc_runtime::burn::backend::Autodiff<Wgpu>;
#[cfg(feature = "cuda")]
pub type Cuda = peftc_runtime::burn::backend::Cuda;
#[cfg(feature = "cuda")]
pub type CudaTrain = peftc_runtime::burn::backend::Autodiff<Cuda>;

/// Runs `$body` with `B` bound to the backend `$dev` names (`$train`: the
/// autodiff variant).
#[macro_export]
macro_rules! with_backend {
    ($dev:expr, train, |$b:ident, $d:ident| $body:expr) => {{
        use $crate::cli::device::DeviceArg;
        match $dev {
            DeviceArg::Cpu => {
                type $b = peftc_runtime::CpuTrain;
                let $d = Default::default();
                $body
            }
            DeviceArg::Wgpu => {
                type $b = $crate::cli::device::WgpuTrain;
                let $d = Default::default();
                $body
            }
            #[cfg(feature = "cuda")]
            DeviceArg::Cuda => {
                type $b = $crate::cli::device::CudaTrain;
                let $d = Default::default();
                $body
            }
        }
    }};
    ($dev:expr, infer, |$b:ident, $d:ident| $body:expr) => {{
        use $crate::cli::device::DeviceArg;
        match $dev {
            DeviceArg::Cpu => {
                type $b = peftc_runtime::Cpu;
                let $d = Default::default();
                $body
            }
            DeviceArg::Wgpu => {
                type $b = $crate::cli::device::Wgpu;
                let $d = Default::default();
                $body
            }
            #[cfg(feature = "cuda")]
            DeviceArg::Cuda => {
                type $b = $crate::cli::device::Cuda;
                let $d = Default::default();
                $body
            }
        }
    }};
}
