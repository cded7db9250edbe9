//! Choosing the Burn device (and so the backend) at run time.
//!
//! | name | backend | cargo feature |
//! |---|---|---|
//! | `flex` | Burn's pure-Rust CPU backend, multi-threaded with SIMD (the default) | `flex` (default) |
//! | `ndarray` | burn-ndarray, deprecated upstream and several times slower | `ndarray` |
//! | `wgpu` | GPU through wgpu (Vulkan, Metal, DX12) | `wgpu` |

use burn::tensor::Device;

use crate::error::DeviceError;

/// The backends attrex can be built with, in order of preference for [`default_device`].
pub const BACKENDS: &[(&str, &str, bool)] = &[
    ("flex", "flex", cfg!(feature = "flex")),
    ("ndarray", "ndarray", cfg!(feature = "ndarray")),
    ("wgpu", "wgpu", cfg!(feature = "wgpu")),
];

/// The fastest CPU device compiled in: `flex` when the feature is on, else `ndarray`, else
/// `wgpu` if an adapter exists.
///
/// # Errors
/// [`DeviceError::NoAdapter`] when only wgpu is compiled in and no adapter is found.
pub fn default_device() -> Result<Device, DeviceError> {
    let first = BACKENDS
        .iter()
        .find(|(_, _, on)| *on)
        .map(|(name, _, _)| *name)
        .unwrap_or("flex");
    device_from_name(first)
}

/// The device named `name` (`flex`, `ndarray` or `wgpu`; case-insensitive).
///
/// For `wgpu` the adapter is requested here, once per process, so a machine without a GPU
/// gets [`DeviceError::NoAdapter`] instead of a panic at the first tensor operation.
///
/// # Errors
/// [`DeviceError::Unknown`], [`DeviceError::NotCompiled`] or [`DeviceError::NoAdapter`].
///
/// # Example
/// ```
/// let device = attrex::device_from_name("flex")?;
/// # Ok::<(), attrex::DeviceError>(())
/// ```
pub fn device_from_name(name: &str) -> Result<Device, DeviceError> {
    let lower = name.to_ascii_lowercase();
    let &(_, feature, compiled) = BACKENDS
        .iter()
        .find(|(n, _, _)| *n == lower)
        .ok_or_else(|| DeviceError::Unknown(name.to_owned()))?;
    if !compiled {
        return Err(DeviceError::NotCompiled {
            name: lower,
            feature,
        });
    }
    match lower.as_str() {
        #[cfg(feature = "flex")]
        "flex" => Ok(Device::flex()),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        "ndarray" => Ok(Device::ndarray()),
        #[cfg(feature = "wgpu")]
        "wgpu" => wgpu_device(),
        _ => unreachable!("BACKENDS lists only the names matched above"),
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device, DeviceError> {
    use std::sync::OnceLock;
    // The runtime can be initialised only once per process; keep the outcome.
    static WGPU: OnceLock<Result<Device, String>> = OnceLock::new();
    WGPU.get_or_init(|| {
        Device::wgpu_options()
            .device_kind(burn::tensor::DeviceKind::DefaultDevice)
            .init()
            .map_err(|e| e.to_string())
    })
    .clone()
    .map_err(|reason| DeviceError::NoAdapter { reason })
}
