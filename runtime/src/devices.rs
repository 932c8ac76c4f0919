//! Whether a backend's device exists, asked before any work: burn and cubecl
//! panic deep inside their first operation when there is none.

use crate::error::{Result, RuntimeError};

/// The adapter burn's wgpu backend would pick (the request cubecl makes: its
/// platform's graphics API, high performance, no forced fallback), or what
/// to install when there is none.
pub fn wgpu_adapter() -> Result<String> {
    use cubecl::wgpu::GraphicsApi;
    let backend = cubecl::wgpu::AutoGraphicsApi::backend();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: backend.into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = futures_lite::future::block_on(instance.request_adapter(
        &wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
        },
    ))
    .map_err(|e| {
        RuntimeError::Invalid(format!(
            "--device wgpu: no GPU adapter found ({e}). Install a Vulkan driver (on Debian / Ubuntu without a GPU: `apt-get install mesa-vulkan-drivers libvulkan1`, Mesa's lavapipe), or use --device cpu"
        ))
    })?;
    let info = adapter.get_info();
    Ok(format!("{} ({:?})", info.name, info.backend))
}
