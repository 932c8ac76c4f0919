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

/// Checks that `dev` exists before any work: a missing device is an error
/// that says what to install, not a panic inside the backend.
pub fn ensure(dev: DeviceArg) -> Result<(), super::CliError> {
    match dev {
        DeviceArg::Cpu => Ok(()),
        DeviceArg::Wgpu => peftc_runtime::devices::wgpu_adapter()
            .map(|_| ())
            .map_err(Into::into),
        #[cfg(feature = "cuda")]
        DeviceArg::Cuda => {
            // cudarc loads libcuda at its first call and panics without it.
            let probe = std::panic::catch_unwind(|| {
                use peftc_runtime::burn::tensor::Tensor;
                let device = Default::default();
                Tensor::<Cuda, 1>::zeros([1], &device).into_data()
            });
            probe.map(|_| ()).map_err(|_| {
                super::CliError::Input(
                    "--device cuda: no CUDA device or driver (libcuda) found; install the NVIDIA driver, or use --device cpu".into(),
                )
            })
        }
    }
}
