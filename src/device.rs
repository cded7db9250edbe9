//! Choosing the Burn device (and so the backend) at run time.
//!
//! | name | backend | cargo feature |
//! |---|---|---|
//! | `flex` | Burn's pure-Rust CPU backend, multi-threaded with SIMD (the default) | `flex` (default) |
//! | `ndarray` | burn-ndarray, deprecated upstream and several times slower | `ndarray` |
//! | `wgpu` | GPU through wgpu (Vulkan, Metal, DX12) | `wgpu` |

use burn::tensor::Device;

use crate::error::DeviceError;

/// A Burn backend attrex can run on, chosen at run time by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// Burn's pure-Rust CPU backend with rayon threads and SIMD (cargo feature `flex`, default).
    Flex,
    /// burn-ndarray, deprecated upstream and several times slower (cargo feature `ndarray`).
    Ndarray,
    /// GPU through wgpu: Vulkan, Metal, DX12 (cargo feature `wgpu`).
    Wgpu,
}

impl Backend {
    /// Every backend, in order of preference for [`default_device`].
    pub const ALL: [Backend; 3] = [Backend::Flex, Backend::Ndarray, Backend::Wgpu];

    /// Its device name, as [`device_from_name`] takes it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Ndarray => "ndarray",
            Backend::Wgpu => "wgpu",
        }
    }

    /// The cargo feature that compiles it in.
    pub fn feature(self) -> &'static str {
        self.name()
    }

    /// Whether this build has it.
    pub fn compiled(self) -> bool {
        match self {
            Backend::Flex => cfg!(feature = "flex"),
            Backend::Ndarray => cfg!(feature = "ndarray"),
            Backend::Wgpu => cfg!(feature = "wgpu"),
        }
    }

    /// The backend named `name` (case-insensitive), compiled in or not.
    ///
    /// # Errors
    /// [`DeviceError::Unknown`] for a name that is none of them.
    pub fn from_name(name: &str) -> Result<Self, DeviceError> {
        Self::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| DeviceError::Unknown(name.to_owned()))
    }

    /// The backend's device.
    ///
    /// For `wgpu` the adapter is requested here, once per process, so a machine without a GPU
    /// gets [`DeviceError::NoAdapter`] instead of a panic at the first tensor operation.
    ///
    /// # Errors
    /// [`DeviceError::NotCompiled`] or [`DeviceError::NoAdapter`].
    pub fn device(self) -> Result<Device, DeviceError> {
        match self {
            #[cfg(feature = "flex")]
            Backend::Flex => Ok(Device::flex()),
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            Backend::Ndarray => Ok(Device::ndarray()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => wgpu_device(),
            #[allow(unreachable_patterns)]
            _ => Err(DeviceError::NotCompiled {
                name: self.name().to_owned(),
                feature: self.feature(),
            }),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s)
    }
}

/// The device of the first backend compiled in: `flex` when the feature is on, else
/// `ndarray`, else `wgpu` if an adapter exists.
///
/// # Errors
/// [`DeviceError::NoAdapter`] when only wgpu is compiled in and no adapter is found.
pub fn default_device() -> Result<Device, DeviceError> {
    Backend::ALL
        .into_iter()
        .find(|b| b.compiled())
        .unwrap_or(Backend::Flex)
        .device()
}

/// The device named `name` (`flex`, `ndarray` or `wgpu`; case-insensitive).
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
    Backend::from_name(name)?.device()
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
